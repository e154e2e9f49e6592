"""MAP pipeline: DataJoint schemas for behaviour, ephys, tracking, histology and publication.

Importing this package is cheap and never connects to a database; schema modules
(``pipeline.lab``, ``pipeline.experiment``, ...) connect when imported.
"""

__version__ = "0.1.0"

import warnings as _warnings

# We configure DataJoint from MAP's dj_local_conf.json, never from datajoint.json.
_warnings.filterwarnings("ignore", message="No datajoint.json found")
# MariaDB is what the lab servers and test machines run; `mapshell db status` shows the version.
_warnings.filterwarnings("ignore", message="MariaDB is not officially supported")

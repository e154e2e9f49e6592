"""MAP pipeline: DataJoint schemas for behaviour, ephys, tracking, histology and publication.

Importing this package is cheap and never connects to a database; schema modules
(``pipeline.lab``, ``pipeline.experiment``, ...) connect when imported.
"""

__version__ = "0.1.0"

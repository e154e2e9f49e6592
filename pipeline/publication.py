"""``publication``: archiving raw data files over Globus. The data-set and file-type lookups now;
the publication issue adds storage locations from the config, data sets and transfers.
"""

from __future__ import annotations

import datajoint as dj

from . import ephys, experiment  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema

schema = _schema("publication")


@schema
class GlobusStorageLocation(dj.Lookup):
    definition = """
    # globus storage locations
    globus_alias : varchar(32)       # name for location (e.g. 'raw-ephys')
    ---
    globus_endpoint : varchar(255)   # globus endpoint (user#endpoint)
    globus_path : varchar(1024)      # unix-style path within endpoint
    """


@schema
class DataSetType(dj.Lookup):
    definition = """
    dataset_type : varchar(64)
    """
    contents = [("ephys-raw",), ("tracking-video",)]


@schema
class FileType(dj.Lookup):
    definition = """
    file_type : varchar(32)          # file type short name
    ---
    file_glob : varchar(64)          # file match pattern
    file_descr : varchar(255)        # file type long description
    """
    contents = [
        ("ephys-raw-ap-bin", "*.ap.bin", "SpikeGLX/CatGT action-potential band binary"),
        ("ephys-raw-ap-meta", "*.ap.meta", "SpikeGLX/CatGT action-potential band metadata"),
        ("ephys-raw-lf-bin", "*.lf.bin", "SpikeGLX/CatGT local-field band binary"),
        ("ephys-raw-lf-meta", "*.lf.meta", "SpikeGLX/CatGT local-field band metadata"),
        ("ephys-raw-sync", "*.XA_*.txt", "CatGT sync edge times"),
        ("tracking-video-trial", "*_*_*-*.avi", "raw per-trial behaviour video"),
    ]

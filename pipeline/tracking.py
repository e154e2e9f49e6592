"""``tracking``: video-based behaviour tracking (DeepLabCut). The camera lookup now; the tracking
ingest adds the per-trial tracking tables.
"""

from __future__ import annotations

import datajoint as dj

from . import experiment  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema

schema = _schema("tracking")


@schema
class TrackingDevice(dj.Lookup):
    definition = """
    tracking_device : varchar(20)          # device type/function
    ---
    tracking_position : varchar(20)        # device position
    sampling_rate : decimal(8,4)           # sampling rate (Hz)
    tracking_device_description : varchar(100)  # device description
    """
    contents = [
        ("Camera 0", "side", 1 / 0.0034, "Chameleon3 CM3-U3-13Y3M-CS (FLIR)"),
        ("Camera 1", "bottom", 1 / 0.0034, "Chameleon3 CM3-U3-13Y3M-CS (FLIR)"),
        ("Camera 2", "body", 1 / 0.01, "Chameleon3 CM3-U3-13Y3M-CS (FLIR)"),
    ]

"""``tracking``: video-based behaviour tracking (DeepLabCut): cameras, and per trial and camera
the tracked features, as MAP's ``pipeline/tracking.py``. ``ingest.tracking`` fills them.
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


def _feature_part(feature: str, label: str) -> str:
    return f"""
        -> master
        ---
        {feature}_x : <blob>            # {label} x location (px), one value per frame
        {feature}_y : <blob>            # {label} y location (px)
        {feature}_likelihood : <blob>   # {label} location likelihood
        """


@schema
class Tracking(dj.Imported):
    definition = """
    # Video feature tracking of one trial by one camera (DeepLabCut); positions in px
    -> experiment.SessionTrial
    -> TrackingDevice
    ---
    tracking_samples : int32     # number of frames tracked in this trial
    """

    class NoseTracking(dj.Part):
        definition = _feature_part("nose", "nose")

    class TongueTracking(dj.Part):
        definition = _feature_part("tongue", "tongue")

    class JawTracking(dj.Part):
        definition = _feature_part("jaw", "jaw")

    class LeftPawTracking(dj.Part):
        definition = _feature_part("left_paw", "left paw")

    class RightPawTracking(dj.Part):
        definition = _feature_part("right_paw", "right paw")

    class LickPortTracking(dj.Part):
        definition = _feature_part("lickport", "lick port")


# DeepLabCut body part -> (Tracking part, attribute prefix)
FEATURE_PARTS = {
    "nose": (Tracking.NoseTracking, "nose"),
    "tongue": (Tracking.TongueTracking, "tongue"),
    "jaw": (Tracking.JawTracking, "jaw"),
    "left_paw": (Tracking.LeftPawTracking, "left_paw"),
    "right_paw": (Tracking.RightPawTracking, "right_paw"),
    "lickport": (Tracking.LickPortTracking, "lickport"),
}

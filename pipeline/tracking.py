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


# --- quality control (issue 8) -------------------------------------------------------------------

from . import analysis as _analysis  # noqa: E402


@schema
class TrackingQC(dj.Computed):
    definition = """
    # jumps of each tracked feature between consecutive frames of one trial and camera
    -> Tracking
    ---
    jump_threshold : float32       # (px) a frame-to-frame move longer than this is a jump
    min_likelihood : float32       # jumps are counted between frames both at least this likely
    """

    class Feature(dj.Part):
        definition = """
        -> master
        tracking_feature : varchar(16)   # nose, tongue, jaw, left_paw, right_paw, lickport
        ---
        n_frames : int32
        n_jumps : int32
        max_jump = null : float64        # (px) longest move between two sure frames
        """

    def make(self, key):
        rows = []
        for feature, (part, prefix) in FEATURE_PARTS.items():
            found = (part & key).to_dicts()
            if not found:
                continue
            row = found[0]
            jumps = _analysis.tracking_jumps(row[f"{prefix}_x"], row[f"{prefix}_y"], row[f"{prefix}_likelihood"])
            rows.append({**key, "tracking_feature": feature, "n_frames": jumps.n_frames, "n_jumps": jumps.n_jumps,
                         "max_jump": jumps.max_jump})
        self.insert1({**key, "jump_threshold": _analysis.JUMP_THRESHOLD_PX, "min_likelihood": _analysis.JUMP_MIN_LIKELIHOOD})
        self.Feature.insert(rows)

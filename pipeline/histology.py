"""``histology``: electrode and probe-track positions in the CCF. The lookup of position sources now;
the histology issue adds the positions themselves.
"""

from __future__ import annotations

import datajoint as dj

from . import ccf, ephys  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema

schema = _schema("histology")


@schema
class TrackSource(dj.Lookup):
    definition = """
    # where a probe track or electrode position came from
    track_source : varchar(32)
    ---
    track_source_description : varchar(255)
    """
    contents = [
        ("ibl_alignment_gui", "IBL ephys alignment GUI channel_locations*.json"),
        ("map_landmarks", "MAP landmarks_*_siteInfo.mat and track CSV"),
    ]

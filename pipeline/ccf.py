"""``ccf``: the Allen Common Coordinate Framework: which annotation volume, at which resolution.

The volume and its ontology are loaded by the CCF issue's tables; this module holds the lookup.
"""

from __future__ import annotations

import datajoint as dj

from .db import schema as _schema

schema = _schema("ccf")


@schema
class CCFLabel(dj.Lookup):
    definition = """
    # CCF Dataset Information
    ccf_label_id : int32            # Local CCF ID
    ---
    ccf_version : int32             # Allen CCF Version
    ccf_resolution : int32          # Voxel Resolution (uM)
    ccf_description : varchar(255)  # CCFLabel Description
    """
    CCF_R3_20UM_ID = 0
    CCF_R3_20UM_DESC = "Allen Institute Mouse CCF, Rev. 3, 20uM Resolution"
    contents = [
        (0, 3, 20, "Allen Institute Mouse CCF, Rev. 3, 20uM Resolution"),
        (1, 3, 10, "Allen Institute Mouse CCF, Rev. 3, 10uM Resolution"),
        (2, 3, 25, "Allen Institute Mouse CCF, Rev. 3, 25uM Resolution"),
    ]

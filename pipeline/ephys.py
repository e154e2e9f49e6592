"""``ephys``: extracellular recordings. Lookups now; the ephys ingest adds insertions and units.

Names follow MAP's ``pipeline/ephys.py``.
"""

from __future__ import annotations

import datajoint as dj

from . import experiment, lab  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema

schema = _schema("ephys")


@schema
class ProbeInsertionQualityType(dj.Lookup):
    definition = """
    probe_insertion_quality : varchar(32)
    """
    contents = [("good",), ("acceptable",), ("bad",), ("drift",), ("not_in_target",)]


@schema
class ClusteringMethod(dj.Lookup):
    definition = """
    clustering_method : varchar(16)
    """
    contents = [(m,) for m in ("jrclust_v3", "jrclust_v4", "kilosort", "kilosort2", "kilosort2.5", "kilosort3", "kilosort4")]


@schema
class UnitQualityType(dj.Lookup):
    definition = """
    # Quality
    unit_quality : varchar(100)
    ---
    unit_quality_description : varchar(4000)
    """
    contents = [
        ("good", "single unit"),
        ("ok", "probably a single unit, but could be contaminated"),
        ("multi", "multi unit"),
        ("mua", "multi unit (Kilosort/phy label)"),
        ("noise", "noise (Kilosort/phy label)"),
        ("all", "all units"),
    ]


@schema
class CellType(dj.Lookup):
    definition = """
    #
    cell_type : varchar(100)
    ---
    cell_type_description : varchar(4000)
    """
    contents = [
        ("Pyr", "putative pyramidal"),
        ("FS", "fast spiking"),
        ("not classified", "intermediate spike-width that falls between spike-width thresholds for FS or Putative pyramidal cells"),
        ("all", "all types"),
    ]


@schema
class ClusteringLabel(dj.Lookup):
    definition = """
    clustering_label : varchar(32)
    ---
    clustering_label_description : varchar(1000)
    """
    contents = [("curated", "phy curation was done"), ("uncurated", "no manual curation")]

"""``histology``: electrode and probe-track positions in the CCF, and where each unit is.

Names follow MAP's ``pipeline/histology.py``; coordinates keep MAP's axes: ``ccf_x`` = ML,
``ccf_y`` = DV, ``ccf_z`` = AP, CCF um (``pipeline.ccf`` arrays are (AP, DV, ML)). MAP keyed
positions on a ``ccf.CCF`` voxel row; here a position is a coordinate plus its region
(``-> ccf.CCFBrainRegion``), looked up with :func:`pipeline.ccf.region_at`.

Filled by ``ingest.histology.HistologyIngest`` (``mapshell ingest-histology``) from the IBL
alignment GUI's ``channel_locations*.json`` / ``xyz_picks*.json`` or MAP's landmark files:

* :class:`ElectrodeCCFPosition`: per insertion; ``ElectrodePosition`` for electrodes inside the
  brain, ``ElectrodePositionError`` for those outside the atlas (outside the volume, or in it
  but on an unlabelled voxel).
* :class:`LabeledProbeTrack`: the traced track, per shank.
* :class:`InterpolatedShankTrack`: per shank, a straight track fitted through the positioned
  electrodes; electrodes of the configuration without a position get one on it (see
  :func:`interpolate_along_shank`).
* :class:`ClusteringCCF` (per sorting) with its part ``Unit`` (alias :data:`UnitCCF`): each unit's coordinate and region, from its peak electrode.

"Good units in MOs (the Allen name of ALM's area) of subject X" is one expression::

    ephys.Unit * histology.UnitCCF * ccf.CCFBrainRegion & "unit_quality = 'good'" & "acronym = 'MOs'" & {"subject_id": X}

and with the region's descendants: ``histology.units_in("MO") & "unit_quality = 'good'"``.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np

from . import ccf, ephys, lab  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema

schema = _schema("histology")

TRACK_STEP_UM = None  # InterpolatedShankTrack.Point spacing: None = the atlas resolution
MAX_TRACK_UM = 15000.0  # how far up the shank the track is followed


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


@schema
class ElectrodeCCFPosition(dj.Manual):
    definition = """
    # CCF positions of an insertion's electrodes (from histology alignment)
    -> ephys.ProbeInsertion
    ---
    -> TrackSource
    -> ccf.AnnotationVersion             # the atlas the regions come from
    """

    class ElectrodePosition(dj.Part):
        definition = """
        # an electrode inside the brain: its CCF coordinate and region
        -> master
        -> lab.ElectrodeConfig.Electrode
        ---
        -> ccf.CCFBrainRegion
        ccf_x : float32                  # (um) ML
        ccf_y : float32                  # (um) DV
        ccf_z : float32                  # (um) AP
        source_region = null : varchar(64)   # the region the alignment file names, as written
        """

    class ElectrodePositionError(dj.Part):
        definition = """
        # an electrode whose position is outside the atlas: no region
        -> master
        -> lab.ElectrodeConfig.Electrode
        ---
        ccf_x : float32                  # (um) ML
        ccf_y : float32                  # (um) DV
        ccf_z : float32                  # (um) AP
        position_error : varchar(255)    # outside the annotation volume, or on an unlabelled voxel
        """


@schema
class LabeledProbeTrack(dj.Manual):
    definition = """
    # the probe track traced in the histology
    -> ephys.ProbeInsertion
    ---
    labeling_date = null : date
    dye_color = null : varchar(32)
    -> TrackSource
    """

    class Point(dj.Part):
        definition = """
        -> master
        order : int32                    # along the traced track, as in the file
        shank : int32                    # 1-based
        ---
        ccf_x : float32                  # (um) ML
        ccf_y : float32                  # (um) DV
        ccf_z : float32                  # (um) AP
        """


@schema
class InterpolatedShankTrack(dj.Computed):
    definition = """
    # a shank's straight track through its positioned electrodes
    -> ElectrodeCCFPosition
    shank : int32                        # 1-based
    ---
    n_positioned : int32                 # electrodes of the shank with a position (inside the atlas or not)
    fitted : bool                        # at least two distinct heights on the shank: a track was fitted
    """

    class Point(dj.Part):
        definition = """
        # points of the fitted track inside the brain, from the deepest electrode up to the brain surface
        -> master
        point_index : int32              # 0 at the deepest electrode, one atlas voxel apart going up
        ---
        ccf_x : float32                  # (um) ML
        ccf_y : float32                  # (um) DV
        ccf_z : float32                  # (um) AP
        -> ccf.CCFBrainRegion
        """

    class BrainSurfacePoint(dj.Part):
        definition = """
        # where the fitted track leaves the brain (its most dorsal point inside the brain)
        -> master
        ---
        ccf_x : float32
        ccf_y : float32
        ccf_z : float32
        """

    class DeepestElectrodePoint(dj.Part):
        definition = """
        # the fitted track at the shank's deepest electrode of the configuration
        -> master
        ---
        ccf_x : float32
        ccf_y : float32
        ccf_z : float32
        """

    class Electrode(dj.Part):
        definition = """
        # an electrode of the configuration that had no position: interpolated along the shank
        -> master
        -> lab.ElectrodeConfig.Electrode
        ---
        ccf_x : float32                  # (um) ML
        ccf_y : float32                  # (um) DV
        ccf_z : float32                  # (um) AP
        -> [nullable] ccf.CCFBrainRegion # null: outside the atlas
        """

    def make(self, key: dict) -> None:
        rows = shank_track_rows(key)
        self.insert(rows["track"])
        for part, name in ((self.Point, "point"), (self.BrainSurfacePoint, "surface"),
                           (self.DeepestElectrodePoint, "deepest"), (self.Electrode, "electrode")):
            if rows[name]:
                part.insert(rows[name])


@schema
class ClusteringCCF(dj.Computed):
    definition = """
    # units of one clustering placed in the CCF (computed per clustering: one job per sorting)
    -> ephys.Clustering
    """

    class Unit(dj.Part):
        definition = """
        # a unit's CCF coordinate and region: those of its peak electrode
        -> master
        -> ephys.Unit
        ---
        position_source : varchar(16)        # measured | interpolated | outside_atlas | unknown
        ccf_x = null : float32               # (um) ML
        ccf_y = null : float32               # (um) DV
        ccf_z = null : float32               # (um) AP
        -> [nullable] ccf.CCFBrainRegion     # null when the electrode is outside the atlas or unknown
        """

    @property
    def key_source(self):
        return ephys.Clustering.proj() & ElectrodeCCFPosition

    def make(self, key: dict) -> None:
        self.insert1(key)
        self.Unit.insert(unit_ccf_rows(key))


# The per-unit rows under the name queries use: ephys.Unit * histology.UnitCCF * ccf.CCFBrainRegion
UnitCCF = ClusteringCCF.Unit


# --- helpers ------------------------------------------------------------------------------------

def _xyz(rows: list[dict]) -> np.ndarray:
    """(n, 3) (AP, DV, ML) from MAP-named columns."""
    return np.array([[r["ccf_z"], r["ccf_y"], r["ccf_x"]] for r in rows], float).reshape(-1, 3)


def _map_columns(apdvml) -> dict:
    ap, dv, ml = (float(v) for v in apdvml)
    return {"ccf_x": ml, "ccf_y": dv, "ccf_z": ap}


def insertion_electrodes(insertion_key: dict) -> list[dict]:
    """Electrodes of an insertion's configuration with their geometry (electrode, shank, x/y_coord)."""
    config = (ephys.ProbeInsertion & insertion_key).to_dicts()[0]
    query = lab.ElectrodeConfig.Electrode * lab.ProbeType.Electrode & {
        "probe_type": config["probe_type"], "electrode_config_name": config["electrode_config_name"]}
    return sorted(query.to_dicts(), key=lambda r: r["electrode"])


def interpolate_along_shank(known_y, known_apdvml, target_y) -> np.ndarray:
    """Positions of electrodes at heights ``target_y`` (um from the tip) on a shank, from those at
    ``known_y`` (at least two distinct heights).

    Between positioned electrodes: linear in the height, per axis (electrodes at the same height
    are averaged), so an alignment that stretches the probe is followed. Beyond the lowest or
    highest positioned electrode: the straight line through the end electrode with the slope of
    the least-squares line through all of them.
    """
    y = np.asarray(known_y, float)
    p = np.asarray(known_apdvml, float).reshape(-1, 3)
    heights, inverse = np.unique(y, return_inverse=True)
    if len(heights) < 2:
        raise ValueError("need positions at two distinct heights to interpolate along a shank")
    mean = np.zeros((len(heights), 3))
    np.add.at(mean, inverse, p)
    mean /= np.bincount(inverse)[:, None]
    slope = np.polyfit(y, p, 1)[0]  # (3,) um per um of height
    t = np.asarray(target_y, float)
    out = np.stack([np.interp(t, heights, mean[:, k]) for k in range(3)], axis=1)
    below, above = t < heights[0], t > heights[-1]
    out[below] = mean[0] + (t[below, None] - heights[0]) * slope
    out[above] = mean[-1] + (t[above, None] - heights[-1]) * slope
    return out


def _regions(points: np.ndarray, version: str) -> np.ndarray:
    """Region id per (AP, DV, ML) point; 0 outside the brain or the volume."""
    v = (ccf.AnnotationVersion & {"annotation_version": version}).fetch1()
    res = float(v["resolution"])
    shape = np.array([v["size_ap"], v["size_dv"], v["size_ml"]])
    idx = np.floor(points / res + 0.5) if len(points) else np.zeros((0, 3))
    inside = np.isfinite(idx).all(axis=1) & ((idx >= 0) & (idx < shape)).all(axis=1)
    out = np.zeros(len(points), np.int64)
    if inside.any():
        out[inside] = ccf.region_at(points[inside], version)
    return out


def shank_track_rows(key: dict) -> dict[str, list[dict]]:
    """InterpolatedShankTrack rows of one ElectrodeCCFPosition (an insertion), by part."""
    ikey = {k: key[k] for k in ("subject_id", "session", "insertion_number")}
    version = (ElectrodeCCFPosition & ikey).fetch1("annotation_version")
    res = float((ccf.AnnotationVersion & {"annotation_version": version}).fetch1("resolution"))
    step = float(TRACK_STEP_UM or res)
    electrodes = insertion_electrodes(ikey)
    positioned = {r["electrode"]: r for r in (ElectrodeCCFPosition.ElectrodePosition & ikey).to_dicts()}
    positioned.update({r["electrode"]: r for r in (ElectrodeCCFPosition.ElectrodePositionError & ikey).to_dicts()})
    rows: dict[str, list[dict]] = {k: [] for k in ("track", "point", "surface", "deepest", "electrode")}
    for shank in sorted({e["shank"] for e in electrodes}):
        on_shank = [e for e in electrodes if e["shank"] == shank]
        known = [e for e in on_shank if e["electrode"] in positioned]
        if not known:
            continue
        skey = {**ikey, "shank": shank}
        heights = np.array([e["y_coord"] for e in known], float)
        fitted = len(np.unique(heights)) >= 2
        rows["track"].append({**skey, "n_positioned": len(known), "fitted": fitted})
        if not fitted:
            continue
        known_xyz = _xyz([positioned[e["electrode"]] for e in known])
        missing = [e for e in on_shank if e["electrode"] not in positioned]
        if missing:
            guessed = interpolate_along_shank(heights, known_xyz, [e["y_coord"] for e in missing])
            regions = _regions(guessed, version)
            for e, point, rid in zip(missing, guessed, regions):
                rows["electrode"].append({
                    **skey, **{k: e[k] for k in ("probe_type", "electrode_config_name", "electrode_group", "electrode")},
                    **_map_columns(point),
                    "annotation_version": version if rid else None, "region_id": int(rid) if rid else None})
        y_tip = min(e["y_coord"] for e in on_shank)
        ys = y_tip + step * np.arange(int(MAX_TRACK_UM // step) + 1)
        line = interpolate_along_shank(heights, known_xyz, ys)
        rows["deepest"].append({**skey, **_map_columns(line[0])})
        labels = _regions(line, version)
        inside = np.flatnonzero(labels)
        for i in inside:
            rows["point"].append({**skey, "point_index": int(i), **_map_columns(line[i]),
                                  "annotation_version": version, "region_id": int(labels[i])})
        if len(inside):
            rows["surface"].append({**skey, **_map_columns(line[inside[-1]])})
    return rows


def unit_ccf_rows(key: dict) -> list[dict]:
    """UnitCCF rows of one clustering: each unit takes its peak electrode's position."""
    ckey = {k: key[k] for k in ("subject_id", "session", "insertion_number", "clustering_method")}
    ikey = {k: key[k] for k in ("subject_id", "session", "insertion_number")}
    position = {}
    for r in (InterpolatedShankTrack.Electrode & ikey).to_dicts():
        position[r["electrode"]] = ("interpolated", r, r["annotation_version"], r["region_id"])
    for r in (ElectrodeCCFPosition.ElectrodePositionError & ikey).to_dicts():
        position[r["electrode"]] = ("outside_atlas", r, None, None)
    for r in (ElectrodeCCFPosition.ElectrodePosition & ikey).to_dicts():
        position[r["electrode"]] = ("measured", r, r["annotation_version"], r["region_id"])
    rows = []
    units, electrodes = (ephys.Unit & ckey).to_arrays("unit", "electrode")
    for unit, electrode in zip(units.tolist(), electrodes.tolist()):
        source, r, version, rid = position.get(int(electrode), ("unknown", None, None, None))
        rows.append({**ckey, "unit": int(unit), "position_source": source,
                     "ccf_x": r["ccf_x"] if r else None, "ccf_y": r["ccf_y"] if r else None,
                     "ccf_z": r["ccf_z"] if r else None, "annotation_version": version, "region_id": rid})
    return rows


def units_in(acronym: str, version: str | None = None, include_descendants: bool = True) -> dj.expression.QueryExpression:
    """``ephys.Unit * UnitCCF`` restricted to units in a region (and, by default, everything below it)."""
    if include_descendants:
        regions = ccf.descendant_regions(acronym, version)
    else:
        v = ccf._version(version)["annotation_version"]
        regions = ccf.CCFBrainRegion & {"annotation_version": v, "acronym": ccf._region(acronym, v)["acronym"]}
    return (ephys.Unit * UnitCCF) & regions.proj()


# CCF structures -> MAP's lab.BrainArea names (the areas with their own quality thresholds)
BRAIN_AREA_OF_STRUCTURE = {"MOs": "ALM", "MY": "Medulla", "MB": "Midbrain", "STR": "Striatum", "TH": "Thalamus",
                           "MOp": "M1", "SSp-bfd": "vS1", "HPF": "Hippocampus", "CB": "Cerebellum"}


def unit_brain_area(key: dict) -> str | None:
    """The lab.BrainArea of a unit's CCF region (or of the nearest enclosing structure that has
    one), for per-region quality thresholds; None if the unit has no region yet."""
    rows = (UnitCCF * ccf.CCFBrainRegion.proj("structure_id_path") & key).to_dicts()
    if not rows:
        return None
    path = [int(i) for i in rows[0]["structure_id_path"].strip("/").split("/") if i]
    names = dict(zip(*(ccf.CCFBrainRegion & {"annotation_version": rows[0]["annotation_version"]}
                       & [{"region_id": i} for i in path]).to_arrays("region_id", "acronym")))
    for region_id in reversed(path):  # the deepest structure first
        area = BRAIN_AREA_OF_STRUCTURE.get(names.get(region_id))
        if area:
            return area
    return None

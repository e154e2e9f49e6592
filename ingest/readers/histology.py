"""Histology files: electrode positions and probe tracks, as the alignment tools write them.

IBL ephys alignment GUI (one file per shank, ``_shank<S>`` / ``_shank_<S>``, 1-based; none for a
single-shank probe):

* ``channel_locations[_shank<S>].json``: ``{"channel_<i>": {"x", "y", "z", "axial", "lateral",
  "brain_region", "brain_region_id"}, ..., "origin": {"bregma": [ml, ap, dv]}}``. ``i`` is the
  channel index of the spike sorting (Kilosort's channel index: a row of ``channel_map.npy``);
  x, y, z are um relative to bregma in IBL's convention: x = ML (right positive), y = AP
  (anterior positive), z = DV (dorsal positive). ``origin.bregma`` is bregma in CCF um
  (ML, AP, DV); without it, IBL's Allen CCF bregma (5739, 5400, 332) is meant.
* ``xyz_picks[_shank<S>].json``: ``{"xyz_picks": [[x, y, z], ...]}`` the traced track, same
  coordinates.

MAP (``landmarks_<h2o>_<YYYYMMDD>_<probe>[_<shank>]_siteInfo.mat`` + ``landmarks_<h2o>_<YYYYMMDD>_<probe>.csv``):

* siteInfo.mat: a struct ``site`` with ``pos.x/.y/.z`` (CCF voxel coordinates at 20 um: ML, DV,
  AP), one per electrode of the insertion's configuration in ascending electrode order, and
  ``ont.name`` (a region name, or an empty/non-text value where the site has none).
* track CSV: rows ``landmark_name, warp, subj_x, subj_y, subj_z, ccf_x, ccf_y, ccf_z``; rows with
  warp false are points of the track, CCF um (ML, DV, AP).

Readers return plain arrays; CCF coordinates are ``(AP, DV, ML)`` um, the axes of
``pipeline.ccf``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ReaderError

# IBL's ALLEN_CCF_LANDMARKS_MLAPDV_UM["bregma"]: bregma in CCF um, (ML, AP, DV).
IBL_BREGMA_MLAPDV = (5739.0, 5400.0, 332.0)
MAP_VOXEL_UM = 20.0  # MAP's siteInfo.mat positions are 20 um CCF voxels

CHANNEL_LOCATIONS_RE = re.compile(r"^channel_locations(?:_shank_?(?P<shank>\d+))?\.json$")
XYZ_PICKS_RE = re.compile(r"^xyz_picks(?:_shank_?(?P<shank>\d+))?\.json$")
SITE_INFO_RE = re.compile(r"^landmarks_(?P<h2o>[^_]+)_(?P<date>\d{8})_(?P<probe>\d+)(?:_(?P<shank>\d+))?_siteInfo\.mat$")
TRACK_CSV_RE = re.compile(r"^landmarks_(?P<h2o>[^_]+)_(?P<date>\d{8})_(?P<probe>\d+)(?:_(?P<shank>\d+))?\.csv$")
_CHANNEL_KEY = re.compile(r"^channel_(\d+)$")


@dataclass(frozen=True)
class HistologyName:
    kind: str                 # channel_locations | xyz_picks | site_info | track_csv
    shank: int | None         # 1-based, from the name; None when the name has none
    probe: int | None = None  # MAP names carry the probe number


def parse_histology_filename(name: str) -> HistologyName | None:
    """What a file name says, or None for a file that is not a histology file."""
    for kind, pattern in (("channel_locations", CHANNEL_LOCATIONS_RE), ("xyz_picks", XYZ_PICKS_RE),
                          ("site_info", SITE_INFO_RE), ("track_csv", TRACK_CSV_RE)):
        m = pattern.match(name)
        if m:
            shank = int(m["shank"]) if m["shank"] else None
            probe = int(m["probe"]) if "probe" in pattern.groupindex else None
            return HistologyName(kind, shank, probe)
    return None


@dataclass(frozen=True)
class ChannelLocations:
    path: Path
    shank: int | None            # from the file name
    channels: np.ndarray         # (n,) int64 sorting channel indices, ascending
    xyz_um: np.ndarray           # (n, 3) IBL x (ML), y (AP), z (DV), um relative to bregma
    axial: np.ndarray            # (n,) um along the shank, nan where absent
    lateral: np.ndarray          # (n,) um across the probe, nan where absent
    brain_region: tuple          # acronym the GUI gave each channel (None where absent)
    brain_region_id: np.ndarray  # (n,) int64, -1 where absent
    bregma_mlapdv: tuple[float, float, float]  # bregma in CCF um

    def ccf_um(self) -> np.ndarray:
        """(n, 3) CCF coordinates (AP, DV, ML) um; see :func:`ibl_to_ccf`."""
        return ibl_to_ccf(self.xyz_um, self.bregma_mlapdv)


@dataclass(frozen=True)
class TrackPoints:
    path: Path
    shank: int | None
    ccf_um: np.ndarray           # (n, 3) (AP, DV, ML) um, in file order


@dataclass(frozen=True)
class SiteInfo:
    path: Path
    shank: int | None
    ccf_um: np.ndarray           # (n, 3) (AP, DV, ML) um, one per site in file order
    valid: np.ndarray            # (n,) bool: the site has a region name (MAP keeps only these)
    names: tuple


def ibl_to_ccf(xyz_um, bregma_mlapdv=IBL_BREGMA_MLAPDV) -> np.ndarray:
    """IBL coordinates relative to bregma -> CCF (AP, DV, ML) um.

    IBL: x = ML (right +), y = AP (anterior +), z = DV (dorsal +), um from bregma. The CCF's AP
    axis grows posterior and its DV axis grows ventral, so AP = bregma_ap - y, DV = bregma_dv - z,
    ML = bregma_ml + x.
    """
    xyz = np.asarray(xyz_um, dtype=float).reshape(-1, 3)
    ml0, ap0, dv0 = (float(v) for v in bregma_mlapdv)
    return np.stack([ap0 - xyz[:, 1], dv0 - xyz[:, 2], ml0 + xyz[:, 0]], axis=1)


def _load_json(path: Path):
    try:
        text = path.read_text()
    except OSError as err:
        raise ReaderError(path, f"cannot read: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ReaderError(path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None


def _number(path: Path, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReaderError(path, f"{where} is {value!r}, not a finite number")
    return float(value)


def _bregma(path: Path, data: dict) -> tuple[float, float, float]:
    origin = data.get("origin")
    if origin is None:
        return IBL_BREGMA_MLAPDV
    bregma = origin.get("bregma") if isinstance(origin, dict) else None
    if not isinstance(bregma, list) or len(bregma) != 3:
        raise ReaderError(path, f"origin must be {{\"bregma\": [ml, ap, dv]}} (CCF um), got {origin!r}")
    return tuple(_number(path, f"origin.bregma[{i}]", v) for i, v in enumerate(bregma))


def read_channel_locations(path: Path | str) -> ChannelLocations:
    path = Path(path)
    parsed = CHANNEL_LOCATIONS_RE.match(path.name)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ReaderError(path, f"expected an object of channel_<i> entries, got a JSON {type(data).__name__}")
    bregma = _bregma(path, data)
    rows = []
    for key, entry in data.items():
        if key == "origin":
            continue
        m = _CHANNEL_KEY.match(key)
        if not m:
            raise ReaderError(path, f"unexpected key {key!r}: entries are channel_<i> (and origin)")
        if not isinstance(entry, dict):
            raise ReaderError(path, f"{key} is a {type(entry).__name__}, not an object")
        missing = [k for k in ("x", "y", "z") if k not in entry]
        if missing:
            raise ReaderError(path, f"{key} has no {', '.join(missing)}")
        xyz = [_number(path, f"{key}.{k}", entry[k]) for k in ("x", "y", "z")]
        axial = _number(path, f"{key}.axial", entry["axial"]) if entry.get("axial") is not None else math.nan
        lateral = _number(path, f"{key}.lateral", entry["lateral"]) if entry.get("lateral") is not None else math.nan
        region = entry.get("brain_region")
        rid = entry.get("brain_region_id")
        rows.append((int(m[1]), xyz, axial, lateral, region if isinstance(region, str) else None,
                     int(rid) if isinstance(rid, (int, float)) and not isinstance(rid, bool) and math.isfinite(rid) else -1))
    if not rows:
        raise ReaderError(path, "no channel_<i> entries")
    rows.sort(key=lambda r: r[0])
    return ChannelLocations(
        path=path, shank=int(parsed["shank"]) if parsed and parsed["shank"] else None,
        channels=np.array([r[0] for r in rows], np.int64), xyz_um=np.array([r[1] for r in rows], float),
        axial=np.array([r[2] for r in rows], float), lateral=np.array([r[3] for r in rows], float),
        brain_region=tuple(r[4] for r in rows), brain_region_id=np.array([r[5] for r in rows], np.int64),
        bregma_mlapdv=bregma)


def read_xyz_picks(path: Path | str, bregma_mlapdv=IBL_BREGMA_MLAPDV) -> TrackPoints:
    """The traced track of one shank; ``bregma_mlapdv`` as in the shank's channel_locations."""
    path = Path(path)
    parsed = XYZ_PICKS_RE.match(path.name)
    data = _load_json(path)
    picks = data.get("xyz_picks") if isinstance(data, dict) else None
    if not isinstance(picks, list) or not picks:
        raise ReaderError(path, "expected {\"xyz_picks\": [[x, y, z], ...]} with at least one point")
    xyz = []
    for i, point in enumerate(picks):
        if not isinstance(point, list) or len(point) != 3:
            raise ReaderError(path, f"xyz_picks[{i}] is {point!r}, not [x, y, z]")
        xyz.append([_number(path, f"xyz_picks[{i}][{j}]", v) for j, v in enumerate(point)])
    return TrackPoints(path, int(parsed["shank"]) if parsed and parsed["shank"] else None,
                       ibl_to_ccf(np.array(xyz, float), bregma_mlapdv))


def read_site_info(path: Path | str, voxel_um: float = MAP_VOXEL_UM) -> SiteInfo:
    """MAP's ``landmarks_*_siteInfo.mat``: site CCF positions (20 um voxels) and region names."""
    import scipy.io

    path = Path(path)
    parsed = SITE_INFO_RE.match(path.name)
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises ValueError/TypeError/OSError for broken files
        raise ReaderError(path, f"not a readable MATLAB file ({type(err).__name__}: {err})") from None
    site = mat.get("site")
    pos = getattr(site, "pos", None)
    if pos is None or not all(hasattr(pos, a) for a in "xyz"):
        raise ReaderError(path, "no site.pos.x/.y/.z")
    try:
        x, y, z = (np.atleast_1d(np.asarray(getattr(pos, a), float)) for a in "xyz")
    except (TypeError, ValueError):
        raise ReaderError(path, "site.pos.x/.y/.z are not numeric") from None
    if not (len(x) == len(y) == len(z)) or not len(x):
        raise ReaderError(path, f"site.pos.x/.y/.z have {len(x)}, {len(y)}, {len(z)} values")
    ont = getattr(site, "ont", None)
    raw = np.atleast_1d(getattr(ont, "name", np.array([None] * len(x), dtype=object)))
    if len(raw) != len(x):
        raise ReaderError(path, f"site.ont.name has {len(raw)} entries for {len(x)} sites")
    names = tuple(n if isinstance(n, str) and n else None for n in raw.tolist())
    coords = np.stack([z, y, x], axis=1) * voxel_um  # (ML, DV, AP) voxels -> (AP, DV, ML) um
    valid = np.array([n is not None for n in names]) & np.isfinite(coords).all(axis=1)
    return SiteInfo(path, int(parsed["shank"]) if parsed and parsed["shank"] else None, coords, valid, names)


def read_track_csv(path: Path | str) -> TrackPoints:
    """MAP's landmark CSV: the rows with warp false are the track (CCF um, ML, DV, AP)."""
    path = Path(path)
    parsed = TRACK_CSV_RE.match(path.name)
    points = []
    try:
        with open(path, newline="") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 8:
                    raise ReaderError(path, f"line {n} has {len(row)} fields; expected 8 (landmark_name, warp, "
                                            "subj_x, subj_y, subj_z, ccf_x, ccf_y, ccf_z)")
                warp = row[1].strip().lower()
                if warp not in ("true", "false", "1", "0"):
                    raise ReaderError(path, f"line {n}: warp is {row[1]!r}, not true/false")
                if warp in ("true", "1"):
                    continue
                try:
                    ml, dv, ap = (float(v) for v in row[5:8])
                except ValueError:
                    raise ReaderError(path, f"line {n}: ccf_x/y/z {row[5:8]} are not numbers") from None
                points.append([ap, dv, ml])
    except OSError as err:
        raise ReaderError(path, f"cannot read: {err.strerror or err}") from None
    if not points:
        raise ReaderError(path, "no track points (rows with warp false)")
    return TrackPoints(path, int(parsed["shank"]) if parsed and parsed["shank"] else None, np.array(points, float))

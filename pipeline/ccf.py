"""``ccf``: the Allen Common Coordinate Framework: annotation volumes, their ontology, region lookups.

MAP stored one row per voxel (``ccf.CCF`` x ``ccf.CCFAnnotation``): 77 M rows for the 25 um
atlas. Here a volume is stored twice, each shape serving one query:

* ``AnnotationChunk``: the label volume cut into blocks (default 64 x 64 x 16 voxels, AP x DV x
  ML) as ``<blob>``; :func:`region_at` fetches only the blocks its coordinates fall in.
* ``RegionVoxels``: per region, its voxels as runs along AP (start, length), plus count and
  bounding box; :func:`region_voxels` fetches a region and its ontology descendants in one query.

The load streams the NRRD file slab by slab (ML planes: the file's slowest axis), so memory is
one slab plus the region runs, not the volume. Volume axes are those of ``nrrd.read()`` on the
Allen files: (AP, DV, ML); CCF coordinates in um are ``voxel index * resolution``.

MAP query shapes that keep working::

    ccf.CCFBrainRegion & "acronym = 'MOs'"
    ccf.CCFBrainRegion & "structure_id_path LIKE '/997/8/567/%'"     # everything under CH
    (ccf.CCFAnnotation & (ccf.CCFBrainRegion & "acronym = 'MOs'")).voxels()
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datajoint as dj
import numpy as np

from .db import schema as _schema

log = logging.getLogger(__name__)

schema = _schema("ccf")

DEFAULT_CHUNK = (64, 64, 16)  # AP x DV x ML voxels; 16 ML planes is also the streaming slab
_FETCH_BATCH = 256  # chunks per query in region_at: bounds memory on a 10 um volume


class CCFError(ValueError):
    """A CCF request that cannot be answered: unknown version or region, conflicting load."""


class CCFCoordinateError(CCFError):
    """Coordinates outside the annotation volume (or not finite)."""


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


@schema
class AnnotationVersion(dj.Manual):
    definition = """
    # one loaded annotation volume with its ontology (MAP: e.g. CCF_2017)
    annotation_version : varchar(32)
    ---
    annotation_desc = '' : varchar(255)
    -> [nullable] CCFLabel                # MAP's local CCF id of this resolution, when there is one
    resolution : int32                    # voxel size (um), isotropic
    size_ap : int32                       # volume shape, voxels (nrrd.read() axes: AP, DV, ML)
    size_dv : int32
    size_ml : int32
    chunk_ap : int32                      # AnnotationChunk block shape, voxels
    chunk_dv : int32
    chunk_ml : int32
    source_file : varchar(255)            # NRRD file name
    source_md5 : char(32)
    ontology_file : varchar(255)          # ontology CSV file name
    ontology_md5 : char(32)
    """


@schema
class CCFBrainRegion(dj.Manual):
    definition = """
    # a structure of the ontology (Allen structure id)
    -> AnnotationVersion
    region_id : int32
    ---
    acronym : varchar(64)                 # e.g. MOs (MAP's CCFBrainRegion.region_name held this)
    region_name : varchar(255)            # e.g. Secondary motor area
    structure_id_path : varchar(255)      # /997/8/.../region_id/: descendants share this prefix
    parent_id = null : int32              # null for the root
    depth : int32                         # 0 for the root
    color_code : char(6)                  # RRGGBB
    unique index (annotation_version, acronym)
    """


@schema
class AnnotationChunk(dj.Manual):
    definition = """
    # a block of the label volume
    -> AnnotationVersion
    chunk_id : int32                      # (i_ap * n_dv + i_dv) * n_ml + i_ml over the block grid
    ---
    ap0 : int32                           # first voxel of the block
    dv0 : int32
    ml0 : int32
    labels : <blob>                       # uint32 (AP, DV, ML) region ids, 0 outside the brain
    """


@schema
class RegionVoxels(dj.Manual):
    definition = """
    # the voxels labelled with exactly this region (not its descendants), run-length encoded
    -> CCFBrainRegion
    ---
    voxel_count : int64
    ap_min : int32                        # bounding box, voxels, inclusive
    ap_max : int32
    dv_min : int32
    dv_max : int32
    ml_min : int32
    ml_max : int32
    run_starts : <blob>                   # int64 flat voxel index, NRRD (Fortran) order
    run_lengths : <blob>                  # int32 voxels along AP; a run never leaves its AP line
    """

    def voxels(self, units: str = "voxel") -> np.ndarray:
        """Every voxel of the regions in this restriction, (n, 3) (AP, DV, ML), in C order."""
        return _decode_rows(self, units)


# MAP's name: a region-restrictable annotation (rows are regions, not voxels: use .voxels()).
CCFAnnotation = RegionVoxels


# --- loading ------------------------------------------------------------------------------------

@dataclass
class LoadSummary:
    version: str
    inserted: bool  # False: this version was already loaded from the same files
    resolution: int
    shape: tuple[int, int, int]
    regions: int  # ontology rows
    labelled_regions: int  # regions with at least one voxel
    labelled_voxels: int
    chunks: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)  # rows inserted per table

    def __str__(self) -> str:
        what = "loaded" if self.inserted else "already loaded (nothing inserted)"
        return (f"{self.version}: {what}: {self.shape[0]} x {self.shape[1]} x {self.shape[2]} voxels at "
                f"{self.resolution} um, {self.regions} regions ({self.labelled_regions} labelled), "
                f"{self.labelled_voxels} labelled voxels, {self.chunks} chunks, {self.seconds:.1f} s")


def _check_resolution(info, resolution: float | None) -> int:
    from ingest.readers.errors import ReaderError

    header = info.resolution_um
    if resolution is None:
        if header is None:
            raise ReaderError(info.path, "no isotropic 'space directions' in the header: give the resolution")
        resolution = header
    elif header is not None and not np.isclose(float(resolution), header):
        raise ReaderError(info.path, f"resolution {resolution} um given, but the header's space directions say {header:g} um")
    if float(resolution) <= 0 or not float(resolution).is_integer():
        raise ReaderError(info.path, f"resolution must be a positive whole number of um, got {resolution}")
    return int(resolution)


def load_ccf(nrrd_path: Path | str, ontology_csv: Path | str, *, version_name: str, resolution: float | None = None,
             description: str = "", chunk_shape: tuple[int, int, int] = DEFAULT_CHUNK) -> LoadSummary:
    """Load an annotation volume and its ontology as ``version_name``, in one transaction.

    Loading the same files under the same name again inserts nothing; a different file under a
    loaded name is a :class:`CCFError`. A voxel label missing from the ontology is a
    ``ReaderError`` naming the label, a voxel that carries it, and both files.
    """
    from ingest.readers import ccf as reader

    t0 = time.perf_counter()
    nrrd_path, ontology_csv = Path(nrrd_path), Path(ontology_csv)
    info = reader.read_nrrd_header(nrrd_path)
    res = _check_resolution(info, resolution)
    ontology = reader.read_ontology(ontology_csv)
    source_md5, ontology_md5 = reader.file_md5(nrrd_path), reader.file_md5(ontology_csv)
    if len(version_name) > 32 or not version_name:
        raise CCFError(f"version name {version_name!r} must be 1 to 32 characters")
    if any(c < 1 for c in chunk_shape) or len(chunk_shape) != 3:
        raise CCFError(f"chunk shape {chunk_shape} must be three positive integers")
    shape = info.shape

    existing = (AnnotationVersion & {"annotation_version": version_name}).to_dicts()
    if existing:
        row = existing[0]
        same = (row["source_md5"], row["ontology_md5"], row["resolution"]) == (source_md5, ontology_md5, res)
        if not same:
            raise CCFError(f"annotation version {version_name!r} is already loaded from {row['source_file']} "
                           f"(md5 {row['source_md5']}) + {row['ontology_file']} (md5 {row['ontology_md5']}) at "
                           f"{row['resolution']} um; {nrrd_path.name} (md5 {source_md5}) + {ontology_csv.name} "
                           f"(md5 {ontology_md5}) at {res} um differ: load them under another version name")
        return _summary(version_name, inserted=False, seconds=time.perf_counter() - t0)

    labels = CCFLabel & {"ccf_version": 3, "ccf_resolution": res}
    label_ids = sorted(labels.to_arrays("ccf_label_id").tolist())
    c_ap, c_dv, c_ml = (int(c) for c in chunk_shape)
    grid = tuple(-(-n // c) for n, c in zip(shape, (c_ap, c_dv, c_ml)))
    known = np.array(sorted(ontology.by_id), dtype=np.int64)
    runs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    n_chunks = 0
    conn = AnnotationVersion.connection
    with conn.transaction:
        AnnotationVersion.insert1(dict(
            annotation_version=version_name, annotation_desc=description[:255],
            ccf_label_id=label_ids[0] if label_ids else None, resolution=res,
            size_ap=shape[0], size_dv=shape[1], size_ml=shape[2], chunk_ap=c_ap, chunk_dv=c_dv, chunk_ml=c_ml,
            source_file=nrrd_path.name[:255], source_md5=source_md5,
            ontology_file=ontology_csv.name[:255], ontology_md5=ontology_md5))
        CCFBrainRegion.insert([dict(
            annotation_version=version_name, region_id=r.id, acronym=r.acronym, region_name=r.name[:255],
            structure_id_path=r.structure_id_path, parent_id=r.parent_id, depth=r.depth, color_code=r.color)
            for r in ontology.regions])
        for ml0, slab in reader.iter_nrrd_slabs(info, c_ml):
            _slab_runs(slab, ml0, shape, known, runs, info.path, ontology.path)
            slab = slab.astype(np.uint32, copy=False)
            rows = []
            for i_ap in range(grid[0]):
                for i_dv in range(grid[1]):
                    block = slab[i_ap * c_ap:(i_ap + 1) * c_ap, i_dv * c_dv:(i_dv + 1) * c_dv, :]
                    rows.append(dict(annotation_version=version_name,
                                     chunk_id=(i_ap * grid[1] + i_dv) * grid[2] + ml0 // c_ml,
                                     ap0=i_ap * c_ap, dv0=i_dv * c_dv, ml0=ml0,
                                     labels=np.ascontiguousarray(block)))
            AnnotationChunk.insert(rows)
            n_chunks += len(rows)
        n_labelled = len(runs)
        for region_id in sorted(runs):
            parts = runs.pop(region_id)  # slabs in order, so runs stay sorted by start
            starts = np.concatenate([p[0] for p in parts])
            lengths = np.concatenate([p[1] for p in parts])
            RegionVoxels.insert1(_region_row(version_name, region_id, starts, lengths, shape))
    seconds = time.perf_counter() - t0
    summary = _summary(version_name, inserted=True, seconds=seconds)
    summary.rows = {"AnnotationVersion": 1, "CCFBrainRegion": len(ontology), "AnnotationChunk": n_chunks,
                    "RegionVoxels": n_labelled}
    log.info("%s", summary)
    return summary


def _slab_runs(slab: np.ndarray, ml0: int, shape: tuple[int, int, int], known: np.ndarray,
               runs: dict[int, list], nrrd_path: Path, ontology_path: Path) -> None:
    """Append this slab's runs (split at AP-line ends, label 0 dropped) to ``runs[label]``."""
    from ingest.readers.errors import ReaderError

    n_ap = shape[0]
    flat = slab.ravel(order="F")  # file order: AP fastest; a view, no copy
    boundary = np.empty(flat.size, dtype=bool)
    boundary[0] = True
    np.not_equal(flat[1:], flat[:-1], out=boundary[1:])
    boundary[::n_ap] = True  # a run never crosses into the next AP line
    starts = np.flatnonzero(boundary)
    lengths = np.diff(np.append(starts, flat.size)).astype(np.int32)
    labels = flat[starts].astype(np.int64)
    if slab.dtype.kind == "i" and labels.size and labels.min() < 0:
        bad = int(starts[np.argmax(labels < 0)])
        raise ReaderError(nrrd_path, f"negative label {labels.min()} at voxel {_voxel(bad, shape, ml0)}")
    keep = labels != 0
    starts, lengths, labels = starts[keep], lengths[keep], labels[keep]
    unknown = ~np.isin(labels, known)
    if unknown.any():
        first = int(np.argmax(unknown))
        missing = np.unique(labels[unknown])
        raise ReaderError(nrrd_path, f"voxel label {labels[first]} (e.g. at voxel (AP, DV, ML) "
                                     f"{_voxel(int(starts[first]), shape, ml0)}) is not in the ontology {ontology_path}"
                                     + (f"; nor are {', '.join(map(str, missing[missing != labels[first]][:10]))}"
                                        if missing.size > 1 else ""))
    starts = starts.astype(np.int64) + ml0 * shape[0] * shape[1]
    order = np.argsort(labels, kind="stable")
    labels, starts, lengths = labels[order], starts[order], lengths[order]
    cuts = np.flatnonzero(np.diff(labels)) + 1
    for lab, s, n in zip(labels[np.r_[0, cuts]] if labels.size else [], np.split(starts, cuts), np.split(lengths, cuts)):
        runs.setdefault(int(lab), []).append((s, n))


def _voxel(local_flat: int, shape: tuple[int, int, int], ml0: int) -> tuple[int, int, int]:
    ap, dv, ml = np.unravel_index(local_flat, (shape[0], shape[1], shape[2] - ml0), order="F")
    return int(ap), int(dv), int(ml) + ml0


def _region_row(version: str, region_id: int, starts: np.ndarray, lengths: np.ndarray,
                shape: tuple[int, int, int]) -> dict:
    ap = starts % shape[0]
    line = starts // shape[0]
    dv, ml = line % shape[1], line // shape[1]
    return dict(annotation_version=version, region_id=region_id, voxel_count=int(lengths.sum()),
                ap_min=int(ap.min()), ap_max=int((ap + lengths - 1).max()), dv_min=int(dv.min()),
                dv_max=int(dv.max()), ml_min=int(ml.min()), ml_max=int(ml.max()),
                run_starts=starts.astype(np.int64), run_lengths=lengths.astype(np.int32))


def _summary(version: str, *, inserted: bool, seconds: float) -> LoadSummary:
    v = (AnnotationVersion & {"annotation_version": version}).fetch1()
    counts = (RegionVoxels & {"annotation_version": version}).to_arrays("voxel_count")
    return LoadSummary(
        version=version, inserted=inserted, resolution=int(v["resolution"]),
        shape=(int(v["size_ap"]), int(v["size_dv"]), int(v["size_ml"])),
        regions=len(CCFBrainRegion & {"annotation_version": version}), labelled_regions=len(counts),
        labelled_voxels=int(np.sum(counts)) if len(counts) else 0,
        chunks=len(AnnotationChunk & {"annotation_version": version}), seconds=seconds)


# --- queries ------------------------------------------------------------------------------------

def _version(version: str | None) -> dict:
    """The AnnotationVersion row: the named one, or the only one loaded."""
    if version is None:
        names = sorted(AnnotationVersion().to_arrays("annotation_version").tolist())
        if len(names) != 1:
            raise CCFError("no annotation volume is loaded (mapshell load-ccf)" if not names else
                           f"{len(names)} annotation versions are loaded ({', '.join(names)}): name one with version=")
        version = names[0]
    rows = (AnnotationVersion & {"annotation_version": version}).to_dicts()
    if not rows:
        names = sorted(AnnotationVersion().to_arrays("annotation_version").tolist())
        raise CCFError(f"annotation version {version!r} is not loaded (loaded: {', '.join(names) or 'none'})")
    return rows[0]


def _region(acronym: str, version: str) -> dict:
    rows = (CCFBrainRegion & {"annotation_version": version, "acronym": acronym}).to_dicts()
    if not rows:
        raise CCFError(f"no region with acronym {acronym!r} in annotation version {version!r}")
    return rows[0]


def descendant_regions(acronym: str, version: str | None = None, include_self: bool = True) -> dj.expression.QueryExpression:
    """``CCFBrainRegion`` restricted to a region and everything below it in the ontology."""
    v = _version(version)["annotation_version"]
    region = _region(acronym, v)
    path = region["structure_id_path"]
    if not path.replace("/", "").isdigit():  # ids only: safe to put in a LIKE pattern
        raise CCFError(f"region {acronym!r} has a malformed structure_id_path {path!r}")
    query = CCFBrainRegion & {"annotation_version": v} & f"structure_id_path LIKE '{path}%'"
    return query if include_self else query - {"region_id": region["region_id"]}


def descendants(acronym: str, version: str | None = None, include_self: bool = False) -> list[str]:
    """Acronyms of the regions below ``acronym`` in the ontology, shallowest first."""
    rows = descendant_regions(acronym, version, include_self).to_dicts()
    return [r["acronym"] for r in sorted(rows, key=lambda r: (r["depth"], r["structure_id_path"]))]


def region_at(coords_um, version: str | None = None, *, acronyms: bool = False) -> np.ndarray:
    """Region of each CCF coordinate: ``coords_um`` (n, 3) in um along (AP, DV, ML).

    A coordinate belongs to the nearest voxel centre (voxel i is centred on i * resolution).
    Returns int64 region ids (0 = outside the brain) or, with ``acronyms=True``, an object
    array of acronyms (None outside the brain). Coordinates outside the volume raise
    :class:`CCFCoordinateError`. Only the blocks the coordinates fall in are fetched.
    """
    v = _version(version)
    name, res = v["annotation_version"], float(v["resolution"])
    shape = np.array([v["size_ap"], v["size_dv"], v["size_ml"]])
    chunk = np.array([v["chunk_ap"], v["chunk_dv"], v["chunk_ml"]])
    coords = np.asarray(coords_um, dtype=float)
    if coords.ndim == 1 and coords.size == 3:
        coords = coords[None, :]
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise CCFCoordinateError(f"coordinates must be an (n, 3) array of (AP, DV, ML) um, got shape {coords.shape}")
    idx = np.floor(coords / res + 0.5)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(idx).all(axis=1) | ((idx < 0) | (idx >= shape)).any(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        extent = ", ".join(f"{ax} [{-res / 2:g}, {(n - 0.5) * res:g})" for ax, n in zip(("AP", "DV", "ML"), shape))
        raise CCFCoordinateError(f"{int(bad.sum())} of {len(coords)} coordinate(s) are outside the {name} volume "
                                 f"({extent} um); the first is row {first}: {coords[first].tolist()}")
    idx = idx.astype(np.int64)
    out = np.zeros(len(idx), dtype=np.int64)
    if len(idx):
        grid = -(-shape // chunk)
        g = idx // chunk
        cid = (g[:, 0] * grid[1] + g[:, 1]) * grid[2] + g[:, 2]
        wanted, inverse = np.unique(cid, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(wanted)))[:-1])
        where = dict(zip(wanted.tolist(), members))
        for b in range(0, len(wanted), _FETCH_BATCH):
            ids = wanted[b:b + _FETCH_BATCH]
            query = AnnotationChunk & {"annotation_version": name}
            if len(ids) < np.prod(grid):
                query = query & f"chunk_id in ({','.join(str(int(i)) for i in ids)})"
            for chunk_id, ap0, dv0, ml0, labels in zip(*query.to_arrays("chunk_id", "ap0", "dv0", "ml0", "labels")):
                sel = where[int(chunk_id)]
                local = idx[sel] - (ap0, dv0, ml0)
                out[sel] = labels[local[:, 0], local[:, 1], local[:, 2]]
    if not acronyms:
        return out
    ids, names = (CCFBrainRegion & {"annotation_version": name}).to_arrays("region_id", "acronym")
    lookup = dict(zip(ids.tolist(), names.tolist()))
    return np.array([lookup.get(int(i)) if i else None for i in out], dtype=object)


def region_voxels(acronym: str, version: str | None = None, include_descendants: bool = True,
                  units: str = "voxel") -> np.ndarray:
    """Every voxel of a region (and, by default, of its descendants): (n, 3) (AP, DV, ML).

    ``units='voxel'``: int32 indices, ordered as ``np.argwhere(np.isin(volume, ids))``;
    ``units='um'``: the same voxels' CCF coordinates (index * resolution), float64.
    One query fetches every region's runs.
    """
    v = _version(version)
    regions = descendant_regions(acronym, v["annotation_version"]) if include_descendants else (
        CCFBrainRegion & {"annotation_version": v["annotation_version"], "acronym": acronym})
    if not include_descendants:
        _region(acronym, v["annotation_version"])
    return _decode_rows(RegionVoxels & regions, units)


def _decode_rows(query, units: str = "voxel") -> np.ndarray:
    if units not in ("voxel", "um"):
        raise CCFError(f"units must be 'voxel' or 'um', not {units!r}")
    rows = query.to_dicts()
    if not rows:
        return np.zeros((0, 3), dtype=np.int32 if units == "voxel" else float)
    versions = {r["annotation_version"] for r in rows}
    if len(versions) > 1:
        raise CCFError(f"voxels of several annotation versions ({', '.join(sorted(versions))}): restrict to one")
    v = (AnnotationVersion & {"annotation_version": versions.pop()}).fetch1()
    shape = (int(v["size_ap"]), int(v["size_dv"]), int(v["size_ml"]))
    starts = np.concatenate([np.asarray(r["run_starts"], dtype=np.int64).ravel() for r in rows])
    lengths = np.concatenate([np.asarray(r["run_lengths"], dtype=np.int64).ravel() for r in rows])
    flat = _expand_runs(starts, lengths)
    ap, dv, ml = np.unravel_index(flat, shape, order="F")
    c_order = np.ravel_multi_index((ap, dv, ml), shape)  # argwhere's order: AP slowest
    flat = np.sort(c_order)
    out = np.stack(np.unravel_index(flat, shape), axis=1).astype(np.int32)
    return out if units == "voxel" else out * float(v["resolution"])


def _expand_runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    run_of = np.repeat(np.arange(len(starts)), lengths)
    offset_in_run = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts[run_of] + offset_in_run

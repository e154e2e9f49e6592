"""Allen CCF files: the annotation volume (NRRD) and its structure ontology (CSV).

Pure readers, no database. The NRRD header is read first (:func:`read_nrrd_header`); the voxel
data is then streamed slab by slab along the file's slowest axis (:func:`iter_nrrd_slabs`), so a
1320 x 800 x 1140 volume never has to be in memory at once. Allen volumes are written in NRRD's
default (Fortran) index order: ``nrrd.read()`` gives an array indexed (AP, DV, ML), AP varies
fastest in the file and ML slowest, so a slab is a run of consecutive ML planes.

Ontology CSV columns (Allen's ``structures.csv`` layout; extra columns are ignored)::

    id, acronym, name, structure_id_path, color_hex_triplet

Every problem is a :class:`~ingest.readers.errors.ReaderError` naming the file.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ReaderError

ONTOLOGY_COLUMNS = ("id", "acronym", "name", "structure_id_path", "color_hex_triplet")
_READ_BYTES = 1 << 22  # compressed bytes read per step while streaming
_HEX = re.compile(r"^[0-9A-Fa-f]{6}$")


# --- ontology -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """One structure of the ontology."""

    id: int
    acronym: str
    name: str
    structure_id_path: str  # "/997/8/567/", ends with the region's own id
    parent_id: int | None  # None for the root
    depth: int  # 0 for the root
    color: str  # "RRGGBB", upper case


@dataclass
class Ontology:
    path: Path
    regions: list[Region]
    by_id: dict[int, Region] = field(init=False, repr=False)
    by_acronym: dict[str, Region] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {r.id: r for r in self.regions}
        self.by_acronym = {r.acronym: r for r in self.regions}

    def __len__(self) -> int:
        return len(self.regions)

    def descendant_ids(self, region_id: int, include_self: bool = True) -> list[int]:
        prefix = self.by_id[region_id].structure_id_path
        return [r.id for r in self.regions
                if r.structure_id_path.startswith(prefix) and (include_self or r.id != region_id)]


def read_ontology(path: Path | str) -> Ontology:
    """Parse and validate an ontology CSV; every id on a structure path must be a row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ReaderError(path, f"cannot read ontology: {err.strerror or err}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ONTOLOGY_COLUMNS if c not in columns]
    if missing:
        raise ReaderError(path, f"ontology CSV is missing column(s) {', '.join(missing)} "
                                f"(has: {', '.join(columns) or 'no header'})")
    reader.fieldnames = columns
    rows: list[tuple[int, str, str, list[int], str, int]] = []
    for line, row in enumerate(reader, start=2):
        def value(col: str) -> str:
            v = row.get(col)
            if v is None or not v.strip():
                raise ReaderError(path, f"line {line}: empty {col}")
            return v.strip()

        try:
            sid = int(value("id"))
        except ValueError:
            raise ReaderError(path, f"line {line}: id {row.get('id')!r} is not an integer") from None
        if not 0 < sid < 2**31:
            raise ReaderError(path, f"line {line}: id {sid} is out of range (1 .. 2^31-1)")
        acronym, name, sid_path = value("acronym"), value("name"), value("structure_id_path")
        try:
            ids = [int(p) for p in sid_path.strip("/").split("/")]
        except ValueError:
            raise ReaderError(path, f"line {line}: structure_id_path {sid_path!r} is not /id/id/.../") from None
        if ids[-1] != sid:
            raise ReaderError(path, f"line {line}: structure_id_path {sid_path!r} does not end with the id {sid}")
        if len(acronym) > 64 or len(sid_path) > 255:
            raise ReaderError(path, f"line {line}: acronym longer than 64 or structure_id_path longer than 255 characters")
        color = value("color_hex_triplet").lstrip("#")
        if not _HEX.match(color):
            raise ReaderError(path, f"line {line}: color_hex_triplet {color!r} is not six hex digits")
        rows.append((sid, acronym, name, ids, color.upper(), line))
    if not rows:
        raise ReaderError(path, "ontology CSV has no rows")
    seen_id: dict[int, int] = {}
    seen_acr: dict[str, int] = {}
    for sid, acronym, _, _, _, line in rows:
        if sid in seen_id:
            raise ReaderError(path, f"line {line}: id {sid} repeats line {seen_id[sid]}")
        if acronym in seen_acr:
            raise ReaderError(path, f"line {line}: acronym {acronym!r} repeats line {seen_acr[acronym]}")
        seen_id[sid], seen_acr[acronym] = line, line
    regions = []
    for sid, acronym, name, ids, color, line in rows:
        unknown = [i for i in ids if i not in seen_id]
        if unknown:
            raise ReaderError(path, f"line {line}: structure_id_path of {acronym} (id {sid}) names "
                                    f"id(s) {', '.join(map(str, unknown))} that have no row")
        regions.append(Region(sid, acronym, name, "/" + "/".join(map(str, ids)) + "/",
                              ids[-2] if len(ids) > 1 else None, len(ids) - 1, color))
    return Ontology(path, regions)


# --- NRRD volume --------------------------------------------------------------------------------

@dataclass(frozen=True)
class VolumeInfo:
    path: Path
    shape: tuple[int, int, int]  # array shape in nrrd.read() (Fortran) index order
    dtype: np.dtype
    encoding: str
    resolution_um: float | None  # isotropic voxel size from "space directions", if given
    header: dict
    data_offset: int  # byte offset of the (possibly compressed) data in data_path
    data_path: Path  # the header file itself, or a detached data file
    byte_skip: int


def file_md5(path: Path | str, block: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _resolution(header: dict) -> float | None:
    directions = header.get("space directions")
    if directions is None:
        return None
    try:
        d = np.asarray(directions, dtype=float)
    except (TypeError, ValueError):
        return None
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        return None
    steps = np.abs(np.diag(d))
    if not np.allclose(d - np.diag(np.diag(d)), 0) or not np.allclose(steps, steps[0]):
        return None
    units = [str(u).lower() for u in header.get("space units", [])]
    scale = 1000.0 if units and all(u in ("mm", "millimeter", "millimeters") for u in units) else 1.0
    return float(steps[0]) * scale


def read_nrrd_header(path: Path | str) -> VolumeInfo:
    """The header of a 3-d integer NRRD volume, and where its data starts."""
    import nrrd
    from nrrd.reader import _determine_datatype

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
    except OSError as err:
        raise ReaderError(path, f"cannot read NRRD: {err.strerror or err}") from None
    except (nrrd.NRRDError, ValueError, UnicodeDecodeError) as err:
        raise ReaderError(path, f"not a readable NRRD header: {err}") from None
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in header:
            raise ReaderError(path, f"NRRD header has no '{key}' field")
    if header["dimension"] != 3 or len(header["sizes"]) != 3:
        raise ReaderError(path, f"annotation must be a 3-d volume, header says dimension {header['dimension']}")
    try:
        dtype = _determine_datatype(header)
    except (nrrd.NRRDError, KeyError) as err:
        raise ReaderError(path, f"NRRD data type: {err}") from None
    if dtype.kind not in "iu":
        raise ReaderError(path, f"annotation labels must be integers, NRRD type is {header['type']}")
    data_file = header.get("data file", header.get("datafile"))
    data_path = path
    if data_file is not None:
        data_path = Path(data_file) if os.path.isabs(str(data_file)) else path.parent / str(data_file)
        offset = 0
    if header.get("line skip", header.get("lineskip", 0)):
        raise ReaderError(path, "NRRD 'line skip' is not supported")
    byte_skip = int(header.get("byte skip", header.get("byteskip", 0)))
    shape = tuple(int(s) for s in header["sizes"])
    if byte_skip == -1:  # data is the last bytes of the (uncompressed) stream
        byte_skip = -int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if byte_skip < 0 and header["encoding"] == "raw":
        offset, byte_skip = data_path.stat().st_size + byte_skip, 0
    return VolumeInfo(path, shape, dtype, str(header["encoding"]), _resolution(header), dict(header),
                      offset, data_path, byte_skip)


def _byte_stream(info: VolumeInfo, piece: int = _READ_BYTES) -> Iterator[bytes]:
    """The uncompressed data bytes, in pieces of at most ``piece`` bytes (label volumes compress
    1000-fold: without a bound one small read would decompress to the whole volume)."""
    enc = info.encoding.lower()
    if enc == "raw":
        decomp = None
    elif enc in ("gzip", "gz"):
        decomp = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    elif enc in ("bzip2", "bz2"):
        decomp = bz2.BZ2Decompressor()
    else:
        raise ReaderError(info.path, f"NRRD encoding {info.encoding!r} cannot be streamed (use raw, gzip or bzip2)")
    try:
        fh = open(info.data_path, "rb")
    except OSError as err:
        raise ReaderError(info.data_path, f"cannot read NRRD data: {err.strerror or err}") from None
    skip = info.byte_skip

    def emit(out: bytes):
        nonlocal skip
        if skip > 0:
            cut = min(skip, len(out))
            out, skip = out[cut:], skip - cut
        return out

    with fh:
        fh.seek(info.data_offset)
        if decomp is None:
            while raw := fh.read(piece):
                if out := emit(raw):
                    yield out
            return
        try:
            if isinstance(decomp, bz2.BZ2Decompressor):
                while not decomp.eof:
                    raw = fh.read(piece) if decomp.needs_input else b""
                    if decomp.needs_input and not raw:
                        break
                    if out := emit(decomp.decompress(raw, max_length=piece)):
                        yield out
            else:
                while not decomp.eof:
                    data = decomp.unconsumed_tail or fh.read(piece)
                    if not data:
                        break
                    if out := emit(decomp.decompress(data, piece)):
                        yield out
        except (zlib.error, OSError, ValueError, EOFError) as err:
            raise ReaderError(info.path, f"corrupt {info.encoding} data: {err}") from None


def iter_nrrd_slabs(info: VolumeInfo | Path | str, thickness: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, slab)``: ``slab`` is ``volume[:, :, start:start + k]`` (k <= thickness).

    ``volume`` is what ``nrrd.read(path)`` returns; each slab is a Fortran-ordered array
    (``slab.ravel(order='F')`` is the file's byte order, without a copy) of the file's own
    dtype. Memory held: one slab plus one read buffer.
    """
    if not isinstance(info, VolumeInfo):
        info = read_nrrd_header(info)
    if info.byte_skip < 0:
        raise ReaderError(info.path, "NRRD 'byte skip -1' on compressed data cannot be streamed")
    n0, n1, n2 = info.shape
    plane = n0 * n1 * info.dtype.itemsize
    slab_bytes = plane * thickness
    buf = bytearray()
    start = 0
    for piece in _byte_stream(info):
        buf += piece
        while len(buf) >= slab_bytes and start < n2:
            k = min(thickness, n2 - start)
            yield start, _slab(buf, k, n0, n1, info.dtype)
            del buf[: k * plane]
            start += k
    while start < n2 and len(buf) >= plane:
        k = min(thickness, n2 - start, len(buf) // plane)
        yield start, _slab(buf, k, n0, n1, info.dtype)
        del buf[: k * plane]
        start += k
    if start < n2:
        done = start * n0 * n1 + len(buf) // info.dtype.itemsize
        raise ReaderError(info.path, f"NRRD data ends after {done} of {n0 * n1 * n2} voxels (truncated file?)")


def _slab(buf: bytearray, k: int, n0: int, n1: int, dtype: np.dtype) -> np.ndarray:
    flat = np.frombuffer(buf, dtype=dtype, count=k * n0 * n1).copy()  # copy: buf is trimmed next
    return flat.reshape((n0, n1, k), order="F")


def read_volume(path: Path | str) -> np.ndarray:
    """The whole volume, as ``nrrd.read`` gives it (for small volumes and tests)."""
    info = read_nrrd_header(path)
    out = np.empty(info.shape, dtype=info.dtype, order="F")
    for start, slab in iter_nrrd_slabs(info, 64):
        out[:, :, start:start + slab.shape[2]] = slab
    return out

"""SpikeGLX / CatGT `.ap.meta` (+ `.ap.bin` size): recording facts and the saved electrodes.

Why probeinterface: Neuropixels geometry (staggered NP1.0 rows, NP2.0 shanks, IMRO bank
addressing) is easy to get subtly wrong by hand; probeinterface builds it from IMEC's own
probe table, and MAP electrode numbers must agree with it. Electrode indices here are 0-based
sites in probeinterface's full-probe numbering (`build_neuropixels_probe(part)`): shank-major,
so on a 4-shank NP2.0 probe shank s, site e is ``s * 1280 + e``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ReaderError

# imDatPrb_type -> MAP lab.ProbeType name
PROBE_TYPE_NAMES: dict[int, str] = {
    0: "neuropixels 1.0 - 3B",
    21: "neuropixels 2.0 - SS",
    24: "neuropixels 2.0 - MS",
}
# imDatPrb_type -> uV per bit at the probe's standard AP gain (what Kilosort amplitudes use)
STANDARD_UV_PER_BIT: dict[int, float] = {0: 2.34375, 21: 0.763, 24: 0.763}
# imDatPrb_type -> imMaxInt when an old meta lacks it (10-bit NP1.0, 14-bit NP2.0 ADC)
DEFAULT_MAX_INT: dict[int, int] = {0: 512, 21: 8192, 24: 8192}
N_READOUT = 384  # acquired AP channels of every supported probe


@dataclass(frozen=True)
class Electrode:
    """One saved AP channel and the site it read."""

    channel: int            # 0-based position among the saved AP channels (.bin column)
    acquired_channel: int   # readout channel 0..383
    electrode: int          # 0-based site, probeinterface full-probe numbering
    shank: int              # 0-based shank
    x_um: float             # probeinterface coordinates (x from shank 0's left column)
    y_um: float             # from the tip row


@dataclass(frozen=True)
class Recording:
    """What ingest needs from one `.ap.meta` (and the size of its `.ap.bin`)."""

    meta_path: Path
    bin_path: Path | None           # None when the .bin is not on disk
    meta: dict[str, str]
    sample_rate: float              # imSampRate (Hz)
    n_saved_channels: int           # nSavedChans, sync included
    n_samples: int                  # fileSizeBytes / (2 * nSavedChans)
    duration_s: float
    file_create_time: dt.datetime
    probe_type_code: int            # imDatPrb_type
    probe_type: str                 # MAP probe type name
    probe_serial: str               # imDatPrb_sn
    part_number: str                # imDatPrb_pn
    imec: int                       # N of `imec<N>` in the file name
    uv_per_bit: float
    electrodes: tuple[Electrode, ...]
    file_sha1: str | None = None

    @property
    def probe_number(self) -> int:
        """MAP's probe number: imec N + 1."""
        return self.imec + 1


def read_meta(path: Path | str) -> dict[str, str]:
    """`key=value` lines; a `~key` is kept under both `~key` and `key` (probeinterface and
    most tools drop the tilde, SpikeGLX's own readers keep it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReaderError(path, "meta file does not exist") from None
    except UnicodeDecodeError:
        raise ReaderError(path, "not a text SpikeGLX meta file (undecodable bytes)") from None
    except OSError as e:
        raise ReaderError(path, f"cannot read meta file: {e.strerror}") from None
    meta: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ReaderError(path, f"line {n} is not key=value: {line[:60]!r}")
        meta[key] = value
        if key.startswith("~"):
            meta[key[1:]] = value
    return meta


def _require(meta: dict, path: Path, key: str) -> str:
    value = meta.get(key, "").strip()
    if not value:
        raise ReaderError(path, f"meta has no {key}")
    return value


def _number(meta: dict, path: Path, key: str, kind=float):
    raw = _require(meta, path, key)
    try:
        return kind(raw)
    except ValueError:
        raise ReaderError(path, f"{key}={raw!r} is not a number") from None


def imec_index(path: Path | str) -> int:
    """N of the last `imec<N>` in the file name (`..._tcat.imec1.ap.meta` -> 1)."""
    found = re.findall(r"imec(\d+)", Path(path).name)
    if not found:
        raise ReaderError(path, "file name has no imec<N>")
    return int(found[-1])


def saved_channels(meta: dict, path: Path) -> list[int]:
    """snsSaveChanSubset expanded (`all` or `a:b,c` ranges, inclusive)."""
    txt = meta.get("snsSaveChanSubset", "all").strip()
    if txt == "all":
        return list(range(_number(meta, path, "nSavedChans", int)))
    out: list[int] = []
    try:
        for part in txt.split(","):
            a, _, b = part.partition(":")
            out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    except ValueError:
        raise ReaderError(path, f"snsSaveChanSubset={txt!r} is not a channel list") from None
    return out


@functools.lru_cache(maxsize=8)
def _full_probe(part_number: str):
    """(contact id -> full-probe index, positions, shank ids) of the whole probe."""
    from probeinterface.neuropixels_tools import build_neuropixels_probe

    probe = build_neuropixels_probe(part_number)
    index = {str(c): i for i, c in enumerate(probe.contact_ids)}
    shanks = (np.zeros(probe.get_contact_count(), np.int64) if probe.shank_ids is None
              else np.asarray(probe.shank_ids).astype(np.int64))
    return index, np.asarray(probe.contact_positions, float), shanks


def _probe_from_meta(path: Path):
    from probeinterface import read_spikeglx

    try:
        return read_spikeglx(path)
    except Exception as e:  # probeinterface raises bare AssertionError/KeyError/ValueError
        raise ReaderError(path, f"probeinterface cannot build the probe geometry: "
                                f"{type(e).__name__}: {e}") from None


def _electrodes(path: Path, meta: dict, part: str, n_ap: int) -> tuple[Electrode, ...]:
    probe = _probe_from_meta(path)
    ids = [str(c) for c in probe.contact_ids]
    if len(ids) != n_ap:
        raise ReaderError(path, f"{n_ap} saved AP channels (snsApLfSy) but the IMRO table and "
                                f"snsSaveChanSubset give {len(ids)} electrodes")
    try:
        index, positions, shanks = _full_probe(part)
        full = [index[c] for c in ids]
    except KeyError as e:
        raise ReaderError(path, f"electrode {e} is not on a {part} probe") from None
    acquired = [c for c in saved_channels(meta, path) if c < N_READOUT][:n_ap]
    return tuple(
        Electrode(channel=i, acquired_channel=int(acquired[i]) if i < len(acquired) else -1,
                  electrode=int(e), shank=int(shanks[e]),
                  x_um=float(positions[e, 0]), y_um=float(positions[e, 1]))
        for i, e in enumerate(full))


def _ap_gain(meta: dict) -> float | None:
    """AP gain of the first IMRO entry: NP1.0 rows carry it (field 4); NP2.0 has a fixed 80."""
    m = re.search(r"\)\((\d+) (\d+) (\d+) (\d+) (\d+) (\d+)\)", meta.get("imroTbl", ""))
    return float(m.group(4)) if m else None


def uv_per_bit(meta: dict, path: Path, type_code: int) -> float:
    """imAiRangeMax / imMaxInt / gain in uV; the standard figure (2.34375, 0.763) when the
    computed value agrees with it, so amplitudes match what Kilosort users quote."""
    gain = _ap_gain(meta) if type_code == 0 else 80.0
    if gain is None or "imAiRangeMax" not in meta:
        return STANDARD_UV_PER_BIT[type_code]
    max_int = int(meta.get("imMaxInt") or DEFAULT_MAX_INT[type_code])
    computed = _number(meta, path, "imAiRangeMax") * 1e6 / max_int / gain
    standard = STANDARD_UV_PER_BIT[type_code]
    return standard if abs(computed - standard) <= 1e-3 * standard else computed


def read_recording(meta_path: Path | str) -> Recording:
    """Parse and check one SpikeGLX/CatGT `.ap.meta`; the `.bin` beside it (if present) must
    be exactly fileSizeBytes long, or a truncated copy would be ingested silently."""
    path = Path(meta_path)
    meta = read_meta(path)
    sample_rate = _number(meta, path, "imSampRate")
    if sample_rate <= 0:
        raise ReaderError(path, f"imSampRate={sample_rate} is not positive")
    n_saved = _number(meta, path, "nSavedChans", int)
    size = _number(meta, path, "fileSizeBytes", int)
    if n_saved <= 0 or size % (2 * n_saved):
        raise ReaderError(path, f"fileSizeBytes={size} is not a whole number of "
                                f"{n_saved}-channel int16 samples")
    n_samples = size // (2 * n_saved)
    bin_path: Path | None = path.with_suffix(".bin")
    if bin_path.exists():
        on_disk = bin_path.stat().st_size
        if on_disk != size:
            raise ReaderError(bin_path, f"{on_disk} bytes on disk but the meta's "
                                        f"fileSizeBytes says {size}")
    else:
        bin_path = None
    raw_time = _require(meta, path, "fileCreateTime")
    try:
        created = dt.datetime.fromisoformat(raw_time)
    except ValueError:
        raise ReaderError(path, f"fileCreateTime={raw_time!r} is not an ISO date-time") from None
    type_code = _number(meta, path, "imDatPrb_type", int)
    if type_code not in PROBE_TYPE_NAMES:
        raise ReaderError(path, f"unsupported probe type imDatPrb_type={type_code} (known: "
                                f"{', '.join(map(str, PROBE_TYPE_NAMES))})")
    part = _require(meta, path, "imDatPrb_pn")
    serial = _require(meta, path, "imDatPrb_sn")
    try:
        n_ap = int(meta.get("snsApLfSy", f"{n_saved - 1},0,1").split(",")[0])
    except ValueError:
        raise ReaderError(path, f"snsApLfSy={meta['snsApLfSy']!r} is not n,n,n") from None
    return Recording(
        meta_path=path, bin_path=bin_path, meta=meta, sample_rate=sample_rate,
        n_saved_channels=n_saved, n_samples=n_samples, duration_s=n_samples / sample_rate,
        file_create_time=created, probe_type_code=type_code,
        probe_type=PROBE_TYPE_NAMES[type_code], probe_serial=serial, part_number=part,
        imec=imec_index(path), uv_per_bit=uv_per_bit(meta, path, type_code),
        electrodes=_electrodes(path, meta, part, n_ap), file_sha1=meta.get("fileSHA1"))


def electrode_config(recording: Recording) -> tuple[str, list[int]]:
    """(MAP probe type, sorted used electrode indices): the key of an electrode config."""
    return recording.probe_type, sorted({e.electrode for e in recording.electrodes})

"""NIDQ sync edges and bitcodes: how ephys trials are matched to Bpod trials.

Every Bpod trial sends its 10-bit random code (GUI.randomID) to the acquisition system. CatGT
extracts two edge lists, one time (s, ephys clock) per line: `*.XA_0_0.txt` (trial starts)
and `*.XA_1_2.txt` (bitcode pulse rising edges). Encoding: after trial start s_i, bit k
(k = 0 is the most significant) is a pulse whose rising edge is at
s_i + 10 ms + k * 4 ms iff the bit is 1. Decoding assigns each edge to the trial window
[s_i, s_{i+1}) and its slot k = round((edge - s_i - 10 ms) / 4 ms). Some sessions also carry
an `<h2o>_<date>_bitcode.mat` (sTrig, goCue, bitCodeS, trialNum) from MAP's own extraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import ReaderError

BIT_LEAD_S = 0.010
BIT_SLOT_S = 0.004
N_BITS = 10


class BitcodeMismatch(ReaderError):
    """Ephys bitcodes that do not match the behaviour session's: wrong session or wrong
    sync file. ``unmatched`` = ephys trial indices (0-based) without a behaviour trial."""

    def __init__(self, path: Path | str, reason: str, unmatched: list[int]) -> None:
        super().__init__(path, reason)
        self.unmatched = unmatched


def _read_times(path: Path | str, what: str) -> np.ndarray:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReaderError(path, f"{what} file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReaderError(path, f"cannot read {what}: {e}") from None
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(float(line))
            except ValueError:
                raise ReaderError(path, f"line {n} is not a time in seconds: {line[:40]!r}"
                                  ) from None
    times = np.array(values, float)
    if not np.all(np.isfinite(times)):
        raise ReaderError(path, f"{what} contains non-finite times")
    if np.any(np.diff(times) < 0):
        raise ReaderError(path, f"{what} are not in increasing order")
    return times


def read_trial_starts(path: Path | str) -> np.ndarray:
    """Trial-start edge times (s, ephys clock) from a CatGT `XA_0_0.txt`."""
    return _read_times(path, "trial starts")


def read_bitcode_edges(path: Path | str) -> np.ndarray:
    """Bitcode pulse rising-edge times (s, ephys clock) from a CatGT `XA_1_2.txt`."""
    return _read_times(path, "bitcode edges")


def decode_bitcodes(trial_starts: np.ndarray, edges: np.ndarray,
                    lead_s: float = BIT_LEAD_S, slot_s: float = BIT_SLOT_S,
                    n_bits: int = N_BITS) -> np.ndarray:
    """One int code per trial start (module docstring for the rule). Edges outside the
    n_bits slots of their trial (e.g. noise after the code) are ignored."""
    starts = np.asarray(trial_starts, float)
    edges = np.asarray(edges, float)
    codes = np.zeros(len(starts), np.int64)
    if not len(starts) or not len(edges):
        return codes
    trial = np.searchsorted(starts, edges, side="right") - 1  # window [s_i, s_{i+1})
    ok = trial >= 0
    trial, edges = trial[ok], edges[ok]
    k = np.round((edges - starts[trial] - lead_s) / slot_s).astype(np.int64)
    ok = (k >= 0) & (k < n_bits)
    np.bitwise_or.at(codes, trial[ok], np.left_shift(1, n_bits - 1 - k[ok]))
    return codes


def read_sync_bitcodes(trial_starts_path: Path | str,
                       bitcode_edges_path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(trial starts, decoded codes) from the two CatGT edge files of one run."""
    starts = read_trial_starts(trial_starts_path)
    return starts, decode_bitcodes(starts, read_bitcode_edges(bitcode_edges_path))


def _column(raw: dict, path: Path, name: str) -> np.ndarray:
    if name not in raw:
        raise ReaderError(path, f"no variable {name}")
    return np.asarray(raw[name]).reshape(-1)


def read_bitcode_mat(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(trial_starts s, go_cues s, bitcodes int, trial_numbers int) from MAP's
    `*_bitcode.mat`. bitCodeS is a char matrix (one row of '0'/'1' per trial, MSB first) or
    a cell of such strings."""
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "bitcode file does not exist")
    try:
        raw = scipy.io.loadmat(path, squeeze_me=False)
    except Exception as e:  # truncated / not a MAT-file / v7.3
        raise ReaderError(path, f"not a readable MATLAB v5 file: {type(e).__name__}: {e}") from None
    starts = _column(raw, path, "sTrig").astype(float)
    go = _column(raw, path, "goCue").astype(float)
    numbers = _column(raw, path, "trialNum")
    bits = raw.get("bitCodeS")
    if bits is None:
        raise ReaderError(path, "no variable bitCodeS")
    bits = np.asarray(bits)
    if bits.dtype == object:
        rows = ["".join(np.asarray(b).ravel()) for b in bits.ravel()]
    elif bits.dtype.kind == "U":
        rows = ["".join(r) for r in bits.reshape(len(bits), -1)] if bits.ndim == 2 and \
            bits.dtype.itemsize // 4 == 1 else [str(r) for r in bits.ravel()]
    else:
        raise ReaderError(path, f"bitCodeS has dtype {bits.dtype}, expected text")
    try:
        codes = np.array([int(r.strip(), 2) for r in rows], np.int64)
    except ValueError:
        raise ReaderError(path, "bitCodeS rows are not binary strings") from None
    n = len(starts)
    for name, arr in (("goCue", go), ("bitCodeS", codes), ("trialNum", numbers)):
        if len(arr) != n:
            raise ReaderError(path, f"{name} has {len(arr)} entries, sTrig has {n}")
    if np.any(numbers != np.round(numbers)):
        raise ReaderError(path, "trialNum is not whole numbers")
    return starts, go, codes, numbers.astype(np.int64)


def match_trials(ephys_bitcodes: Sequence[int] | np.ndarray,
                 behavior_bitcodes: Mapping[int, int] | Sequence[int] | np.ndarray,
                 source: Path | str = "<ephys bitcodes>", max_unmatched: int = 0) -> dict[int, int]:
    """{ephys trial index (0-based): behaviour trial number}.

    behavior_bitcodes: {Bpod trial number: code}, or a sequence numbered 1, 2, ... in Bpod
    order. Pass every Bpod trial (training ones too, they are recorded on the NIDQ as
    well) and filter trials afterwards. Ephys trials are matched in order, each to the next
    behaviour trial with its code (so a code repeated later in a long session still pairs
    correctly); the recording may miss behaviour trials at either end. More than
    max_unmatched ephys trials without a partner, or none matched at all, raises
    :class:`BitcodeMismatch` naming ``source`` (the sync file)."""
    if isinstance(behavior_bitcodes, Mapping):
        beh = sorted((int(k), int(v)) for k, v in behavior_bitcodes.items())
    else:
        beh = [(i + 1, int(v)) for i, v in enumerate(behavior_bitcodes)]
    positions: dict[int, list[int]] = {}
    for pos, (_, code) in enumerate(beh):
        positions.setdefault(code, []).append(pos)
    mapping: dict[int, int] = {}
    unmatched: list[int] = []
    cursor = 0
    for i, code in enumerate(np.asarray(ephys_bitcodes, np.int64).tolist()):
        cand = positions.get(code, [])
        j = int(np.searchsorted(cand, cursor))
        if j < len(cand):
            mapping[i] = beh[cand[j]][0]
            cursor = cand[j] + 1
        else:
            unmatched.append(i)
    n = len(mapping) + len(unmatched)
    if len(unmatched) > max_unmatched or (n and not mapping):
        shown = ", ".join(map(str, unmatched[:10])) + (" ..." if len(unmatched) > 10 else "")
        raise BitcodeMismatch(source, f"bitcodes do not match the behaviour session: "
                                      f"{len(unmatched)} of {n} ephys trials unmatched "
                                      f"(ephys trial indices {shown})", unmatched)
    return mapping

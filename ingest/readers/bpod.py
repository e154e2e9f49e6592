"""Bpod SessionData reader (MATLAB v5 ``.mat``): file -> :class:`BpodSession`.

Knows the Bpod file format and nothing about the database. What it returns is what Bpod
stored, with scipy's ``squeeze_me`` quirks undone so that every trial looks the same:

* a session with a single trial: per-trial vectors come back as scalars and the cell arrays
  (``TrialSettings``, ``RawEvents.Trial``) as the lone struct -> always lists here;
* a state visited once is squeezed to shape ``(2,)`` -> always ``(k, 2)`` here, and an
  unvisited state keeps Bpod's ``[NaN NaN]`` row (so ``(1, 2)`` of NaN);
* an event with one timestamp becomes a float scalar -> always a 1-d float array here.

Times: ``BpodTrial.start`` / ``end`` are ``TrialStartTimestamp`` / ``TrialEndTimestamp``
(s, Bpod session clock, *not* rebased to the first trial); state and event times are relative
to the trial start, as Bpod stores them.

Every failure is a :class:`~ingest.readers.errors.ReaderError` naming the file and what is
wrong (truncated file, no ``SessionData``, a missing field, inconsistent trial counts, ...).

Public API::

    read_bpod_session(path) -> BpodSession
    parse_bpod_filename(name) -> BpodFileName(h2o, protocol, datetime) | None
    session_start(date_str, time_str) -> datetime.datetime
"""
from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.io

from .errors import ReaderError

__all__ = [
    "BpodTrial", "BpodSession", "BpodFileName", "read_bpod_session", "parse_bpod_filename",
    "session_start", "BPOD_FILENAME_RE",
]

# MAP's behaviour-file pattern (pipeline/ingest/behavior.py key_source), with the dot before
# "mat" escaped: 2 letters + rest of the water-restriction number, protocol (may itself contain
# underscores), YYYYMMDD, HHMMSS.
BPOD_FILENAME_RE = re.compile(r"^[a-zA-Z]{2}.*_.*_[0-9]{8}_[0-9]{6}\.mat$")

# Fields of SessionData the reader cannot do without.
REQUIRED_FIELDS = ("nTrials", "TrialStartTimestamp", "TrialEndTimestamp", "TrialTypes",
                   "TrialSettings", "Info", "RawEvents")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}


@dataclass
class BpodTrial:
    """One Bpod trial.

    number:        Bpod 1-based trial number (position in the session).
    start, end:    TrialStartTimestamp / TrialEndTimestamp (s, Bpod session clock).
    trial_type:    SessionData.TrialTypes entry (int).
    protocol_type: GUI.ProtocolType (int), None if the GUI has no ProtocolType.
    auto_water:    bool(GUI.Autowater); False if the GUI has no Autowater.
    bitcode:       GUI.randomID as int (the 10-bit code also sent to ephys), None if absent.
    states:        {state name: (k, 2) float array of [start stop] rows relative to trial
                   start}; every state of the state machine, NaN rows where unvisited.
    events:        {event name: 1-d float array of times relative to trial start}; only the
                   events that happened (as Bpod stores them).
    gui:           the trial's GUI settings as plain Python values (float / str / list).
    """

    number: int
    start: float
    end: float
    trial_type: int
    protocol_type: int | None
    auto_water: bool
    bitcode: int | None
    states: dict[str, np.ndarray]
    events: dict[str, np.ndarray]
    gui: dict[str, Any] = field(default_factory=dict)
    stim_code: int = 0        # SessionData.StimTrials entry: MAP's photostim code, 0 = none

    def visits(self, state: str) -> np.ndarray:
        """(k, 2) rows of the visits to ``state`` (NaN rows dropped; (0, 2) if never visited
        or if the state machine has no such state)."""
        rows = self.states.get(state)
        if rows is None:
            return np.zeros((0, 2))
        return rows[~np.isnan(rows).any(axis=1)]

    def visited(self, state: str) -> bool:
        return len(self.visits(state)) > 0

    def event_times(self, name: str) -> np.ndarray:
        """Times of event ``name`` (empty if it never happened)."""
        return self.events.get(name, np.zeros(0))


@dataclass
class BpodSession:
    """A Bpod SessionData file.

    path:      the file read.
    start:     session start, naive local datetime (Info.SessionDate + Info.SessionStartTime_UTC;
               despite the name Bpod writes local wall-clock time there).
    n_trials:  SessionData.nTrials (== len(trials)).
    trials:    BpodTrial per trial, in Bpod order (trials[i].number == i + 1).
    protocol:  Info.SessionProtocol if present, else None.
    info:      the Info struct's scalar / string fields as plain values.
    """

    path: Path
    start: dt.datetime
    n_trials: int
    trials: list[BpodTrial]
    protocol: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class BpodFileName(NamedTuple):
    h2o: str
    protocol: str
    datetime: dt.datetime


# ----------------------------------------------------------------------------- file names
def parse_bpod_filename(name: str | Path) -> BpodFileName | None:
    """``<h2o>_<protocol>_<YYYYMMDD>_<HHMMSS>.mat`` -> (h2o, protocol, datetime).

    Follows MAP's regex ``^[a-zA-Z]{2}.*_.*_[0-9]{8}_[0-9]{6}.mat$`` (with the dot escaped):
    h2o is everything before the first underscore, protocol everything between it and the
    date (e.g. ``dl7_TW_autoTrain_20180104_132813.mat`` -> ('dl7', 'TW_autoTrain', ...)).
    Accepts a bare name or a path (only the last component is used). Returns None if the name
    does not match or the date/time digits are not a real date/time."""
    base = name.rsplit("/", 1)[-1] if isinstance(name, str) else Path(name).name
    if not BPOD_FILENAME_RE.match(base):
        return None
    parts = base[: -len(".mat")].split("_")
    h2o, protocol, ymd, hms = parts[0], "_".join(parts[1:-2]), parts[-2], parts[-1]
    try:  # int() slices: a share scan parses tens of thousands of names, strptime is slow
        when = dt.datetime(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:]), int(hms[:2]), int(hms[2:4]), int(hms[4:]))
    except ValueError:
        return None
    return BpodFileName(h2o, protocol, when)


def session_start(date_str: str, time_str: str) -> dt.datetime:
    """``'04-Jan-2018'`` + ``'14:22:05'`` (optionally with fractional seconds) -> datetime.

    Month names are parsed without the C locale's help (English abbreviations). Raises
    ValueError on anything else."""
    m = re.fullmatch(r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4})\s*", date_str)
    if not m or m.group(2).lower() not in _MONTHS:
        raise ValueError(f"SessionDate {date_str!r} is not like '04-Jan-2018'")
    t = re.fullmatch(r"\s*(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*", time_str)
    if not t:
        raise ValueError(f"SessionStartTime_UTC {time_str!r} is not like '14:22:05'")
    micro = int((t.group(4) or "0")[:6].ljust(6, "0"))
    return dt.datetime(int(m.group(3)), _MONTHS[m.group(2).lower()], int(m.group(1)),
                       int(t.group(1)), int(t.group(2)), int(t.group(3)), micro)


# ----------------------------------------------------------------------------- low level
def _check_v5_container(path: Path) -> None:
    """Fail early and precisely on files scipy would reject with an obscure message: empty,
    not a MAT file, MATLAB v7.3 (HDF5), or a v5 file whose last data element runs past the
    end of the file (truncated copy)."""
    size = path.stat().st_size
    if size == 0:
        raise ReaderError(path, "empty file (0 bytes); expected a Bpod SessionData .mat")
    with open(path, "rb") as fh:
        head = fh.read(128)
        if len(head) < 128:
            raise ReaderError(path, f"truncated: {size} bytes, shorter than the 128-byte MAT "
                                    "file header")
        if head[:4] == b"\x89HDF":
            raise ReaderError(path, "HDF5 file without a MATLAB header; expected a Bpod "
                                    "SessionData .mat")
        endian = head[126:128]
        if endian not in (b"IM", b"MI"):
            return  # v4 or unknown: let scipy decide
        e = "<" if endian == b"IM" else ">"
        version = struct.unpack(e + "H", head[124:126])[0]
        if version == 0x0200:
            raise ReaderError(path, "MATLAB v7.3 (HDF5) file; Bpod SessionData is read as a "
                                    "MATLAB v5 file (save with -v7 or -v6)")
        offset = 128
        while offset < size:
            fh.seek(offset)
            tag = fh.read(8)
            if len(tag) < 8:
                raise ReaderError(path, f"truncated: file ends inside a data element tag at "
                                        f"byte {offset} of {size}")
            dtype, nbytes = struct.unpack(e + "II", tag)
            if dtype >> 16:  # small data element: 4-byte tag, data packed in the same 8 bytes
                offset += 8
                continue
            if offset + 8 + nbytes > size:
                raise ReaderError(path, f"truncated: data element at byte {offset} declares "
                                        f"{nbytes} bytes but the file ends at byte {size}")
            # miCOMPRESSED (15) is not padded; other elements are padded to 8 bytes
            end = offset + 8 + nbytes + (0 if dtype == 15 else (-nbytes) % 8)
            offset = end


def _fieldnames(obj: Any) -> list[str]:
    return list(getattr(obj, "_fieldnames", None) or [])


def _as_items(x: Any) -> list:
    """A MATLAB cell / struct array / vector as a Python list, undoing squeeze_me."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return list(x.ravel())
        return list(np.atleast_1d(x).ravel())
    return [x]


def _as_float_vector(path: Path, name: str, x: Any) -> np.ndarray:
    try:
        return np.atleast_1d(np.asarray(x, dtype=float)).ravel()
    except (TypeError, ValueError) as exc:
        raise ReaderError(path, f"{name} is not numeric ({exc})") from None


def _plain(x: Any) -> Any:
    """A loaded MATLAB value as plain Python (float/int/str/list/dict)."""
    if isinstance(x, str):
        return x
    if hasattr(x, "_fieldnames"):
        return {k: _plain(getattr(x, k)) for k in _fieldnames(x)}
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return [_plain(v) for v in x.ravel()]
        if x.ndim == 0:
            return x.item()
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _scalar(path: Path, where: str, x: Any) -> float:
    arr = np.asarray(x)
    if arr.dtype == object or arr.size != 1:
        raise ReaderError(path, f"{where} is not a single number (got {arr.shape} {arr.dtype})")
    try:
        return float(arr.ravel()[0])
    except (TypeError, ValueError):
        raise ReaderError(path, f"{where} is not numeric") from None


def _states(path: Path, where: str, st: Any) -> dict[str, np.ndarray]:
    out = {}
    for name in _fieldnames(st):
        try:
            a = np.asarray(getattr(st, name), dtype=float)
        except (TypeError, ValueError):
            raise ReaderError(path, f"{where}.States.{name} is not numeric") from None
        if a.size % 2:
            raise ReaderError(path, f"{where}.States.{name} has {a.size} values; expected "
                                    "[start stop] rows")
        # MATLAB k x 2, squeezed to (2,) when k == 1; reshape row-major keeps the rows
        out[name] = a.reshape(-1, 2) if a.ndim != 2 else a
        if out[name].shape[1] != 2:
            raise ReaderError(path, f"{where}.States.{name} has shape {a.shape}; expected (k, 2)")
    return out


def _events(path: Path, where: str, ev: Any) -> dict[str, np.ndarray]:
    out = {}
    for name in _fieldnames(ev):
        try:
            out[name] = np.atleast_1d(np.asarray(getattr(ev, name), dtype=float)).ravel()
        except (TypeError, ValueError):
            raise ReaderError(path, f"{where}.Events.{name} is not numeric") from None
    return out


def _int_or_none(x: Any) -> int | None:
    if x is None:
        return None
    a = np.asarray(x)
    if a.dtype == object or a.size != 1:
        return None
    v = float(a.ravel()[0])
    return None if np.isnan(v) else int(round(v))


# ----------------------------------------------------------------------------- reader
def read_bpod_session(path: str | Path) -> BpodSession:
    """Read a Bpod SessionData .mat; see the module docstring for the conventions."""
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "does not exist")
    if not path.is_file():
        raise ReaderError(path, "is not a regular file")
    _check_v5_container(path)
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises many types for damaged files
        raise ReaderError(path, f"corrupt or truncated MAT file: {type(exc).__name__}: {exc}") \
            from None
    if "SessionData" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ReaderError(path, f"no SessionData variable (found: {', '.join(found) or 'none'})")
    sd = mat["SessionData"]
    names = _fieldnames(sd)
    if not names:
        raise ReaderError(path, "SessionData is not a struct")
    missing = [f for f in REQUIRED_FIELDS if f not in names]
    if missing:
        raise ReaderError(path, f"SessionData is missing field(s): {', '.join(missing)}")

    # session start
    info = sd.Info
    for f in ("SessionDate", "SessionStartTime_UTC"):
        if f not in _fieldnames(info):
            raise ReaderError(path, f"SessionData.Info is missing field {f}")
    try:
        start = session_start(str(info.SessionDate), str(info.SessionStartTime_UTC))
    except ValueError as exc:
        raise ReaderError(path, f"SessionData.Info: {exc}") from None
    info_plain = {k: _plain(getattr(info, k)) for k in _fieldnames(info)}
    protocol = info_plain.get("SessionProtocol")
    protocol = protocol if isinstance(protocol, str) else None

    # per-trial vectors
    n_f = _scalar(path, "SessionData.nTrials", sd.nTrials)
    if n_f != int(n_f) or n_f < 0:
        raise ReaderError(path, f"SessionData.nTrials = {n_f} is not a trial count")
    n = int(n_f)
    if n == 0:
        return BpodSession(path, start, 0, [], protocol, info_plain)
    starts = _as_float_vector(path, "SessionData.TrialStartTimestamp", sd.TrialStartTimestamp)
    ends = _as_float_vector(path, "SessionData.TrialEndTimestamp", sd.TrialEndTimestamp)
    ttypes = _as_float_vector(path, "SessionData.TrialTypes", sd.TrialTypes)
    settings = _as_items(sd.TrialSettings)
    raw = sd.RawEvents
    if "Trial" not in _fieldnames(raw):
        raise ReaderError(path, "SessionData.RawEvents is missing field Trial")
    raw_trials = _as_items(raw.Trial)
    for name, seq in (("TrialStartTimestamp", starts), ("TrialEndTimestamp", ends),
                      ("TrialSettings", settings), ("RawEvents.Trial", raw_trials)):
        if len(seq) != n:
            raise ReaderError(path, f"nTrials = {n} but SessionData.{name} has {len(seq)} "
                                    "entries")
    if len(ttypes) < n:  # Bpod protocols often pre-allocate TrialTypes for the whole session
        raise ReaderError(path, f"nTrials = {n} but SessionData.TrialTypes has only "
                                f"{len(ttypes)} entries")
    # MAP's photostim protocols record a per-trial stimulation code (0 = no light).
    stims = (_as_float_vector(path, "SessionData.StimTrials", sd.StimTrials)
             if "StimTrials" in _fieldnames(sd) else np.zeros(n))
    if len(stims) < n:
        raise ReaderError(path, f"nTrials = {n} but SessionData.StimTrials has only {len(stims)} entries")

    trials = []
    for i in range(n):
        where = f"RawEvents.Trial{{{i + 1}}}"
        rt = raw_trials[i]
        rt_fields = _fieldnames(rt)
        for f in ("States", "Events"):
            if f not in rt_fields:
                raise ReaderError(path, f"{where} is missing field {f}")
        s = settings[i]
        gui_obj = getattr(s, "GUI", None) if "GUI" in _fieldnames(s) else None
        if gui_obj is None:
            raise ReaderError(path, f"TrialSettings{{{i + 1}}} is missing field GUI")
        gui = {k: _plain(getattr(gui_obj, k)) for k in _fieldnames(gui_obj)}
        aw = _int_or_none(gui.get("Autowater"))
        trials.append(BpodTrial(
            number=i + 1, start=float(starts[i]), end=float(ends[i]),
            trial_type=int(round(ttypes[i])),
            protocol_type=_int_or_none(gui.get("ProtocolType")),
            auto_water=bool(aw) if aw is not None else False,
            bitcode=_int_or_none(gui.get("randomID")),
            states=_states(path, where, rt.States),
            events=_events(path, where, rt.Events),
            gui=gui,
            stim_code=int(round(stims[i])) if np.isfinite(stims[i]) else 0))
    return BpodSession(path, start, n, trials, protocol, info_plain)

"""DeepLabCut readers: per-trial pose CSVs, the per-camera trial map, and the file-name spec.

MAP tracking layout (RIG_SHARE.md): ``<tracking root>/<h2o>/<h2o>_<mmddyy>[_<n>]/`` holding
a trial map ``<h2o>_<mmddyy>_<campos>.txt`` (lines ``<file index>\\t<Bpod trial>``) and one
CSV per filmed trial,
``<h2o>_<mmddyy>_<campos>_<file index>-0000DLC_resnet50_<task><MonDD>shuffle1_<iters>.csv``.

Body parts -> MAP tracking features (``tracking.Tracking.<Feature>Tracking`` part tables,
attributes ``<feature>_x``, ``<feature>_y``, ``<feature>_likelihood``):

    CSV body part          MAP feature   MAP part table
    nose                   nose          NoseTracking
    tongue                 tongue        TongueTracking
    jaw                    jaw           JawTracking
    left_paw  (paw_left)   left_paw      LeftPawTracking
    right_paw (paw_right)  right_paw     RightPawTracking
    lickport  (lick_port)  lickport      LickPortTracking

The simulator (and newer rigs) write the left-hand names; older MAP DLC models wrote
``paw_left`` / ``paw_right``, which MAP's ingest renamed. Both spellings are accepted here and
:class:`DlcTrack` parts are keyed by the MAP feature name. Other body parts (whiskers, ...)
are kept under their own name.

Public API::

    read_trial_map(path) -> dict[int, int]            # file index -> Bpod trial number
    read_dlc_csv(path, required_parts=MAP_FEATURES, individual=None) -> DlcTrack
    parse_dlc_filename(name) -> DlcFileName(h2o, mmddyy, camera, trial) | None
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import ReaderError

__all__ = [
    "DlcTrack", "DlcFileName", "read_trial_map", "read_dlc_csv", "parse_dlc_filename",
    "MAP_FEATURES", "FEATURE_OF_PART", "FEATURE_TABLES", "DLC_FILENAME_RE",
]

MAP_FEATURES = ("nose", "tongue", "jaw", "left_paw", "right_paw", "lickport")
# CSV body-part name -> MAP feature name
FEATURE_OF_PART = {
    "nose": "nose", "tongue": "tongue", "jaw": "jaw",
    "left_paw": "left_paw", "paw_left": "left_paw",
    "right_paw": "right_paw", "paw_right": "right_paw",
    "lickport": "lickport", "lick_port": "lickport",
}
FEATURE_TABLES = {"nose": "NoseTracking", "tongue": "TongueTracking", "jaw": "JawTracking",
                  "left_paw": "LeftPawTracking", "right_paw": "RightPawTracking",
                  "lickport": "LickPortTracking"}
COORDS = ("x", "y", "likelihood")

# <h2o>_<mmddyy>[_<n>]_<campos>_<index>-<segment>DLC_<network>_<task><MonDD>shuffle<k>_<iters>
# [_filtered].csv; campos may contain underscores (MAP also knows side_face, bottom_face,
# side_body), h2o starts with two letters (MAP's behaviour-file convention).
DLC_FILENAME_RE = re.compile(
    r"^(?P<h2o>[A-Za-z]{2}[A-Za-z0-9]*)_(?P<mmddyy>\d{6})(?:_(?P<nth>\d+))?"
    r"_(?P<camera>[A-Za-z][A-Za-z_]*?)_(?P<trial>\d+)-(?P<segment>\d+)"
    r"(?P<scorer>DLC_.+?)(?:_filtered)?\.csv$")


@dataclass
class DlcTrack:
    """One DLC output file.

    n_frames: rows (video frames) in the file.
    parts:    {MAP feature name (or the body part's own name if not a MAP feature):
               (x, y, likelihood)} as 1-d float64 arrays of length n_frames.
    scorer:   the DLC scorer (network) name from the header.
    frame_index: the file's first column (frame numbers), int64.
    """

    n_frames: int
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    scorer: str = ""
    frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class DlcFileName(NamedTuple):
    h2o: str
    mmddyy: str        # the session date as in the name, 'mmddyy'
    camera: str        # camera position, e.g. 'side', 'bottom', 'side_face'
    trial: int         # the number in the name: the trial map's file index


def parse_dlc_filename(name: str | Path) -> DlcFileName | None:
    """Parse a per-trial DLC CSV name (bare name or path); None if it does not follow the
    spec. An optional same-day session suffix after the date (``dl30_040318_2_side_...``) is
    accepted (the folder name carries it too) and not returned."""
    m = DLC_FILENAME_RE.match(Path(name).name)
    if not m:
        return None
    return DlcFileName(m["h2o"], m["mmddyy"], m["camera"], int(m["trial"]))


def read_trial_map(path: str | Path) -> dict[int, int]:
    """``<file index>\\t<Bpod trial>`` lines -> {file index: Bpod trial number}.

    Blank lines are ignored; anything else that is not two integers, or a file index or
    trial listed twice, is a ReaderError naming the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReaderError(path, "does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(path, f"cannot read trial map: {exc}") from None
    out: dict[int, int] = {}
    seen_trials: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            idx, trial = int(fields[0]), int(fields[1])
        except ValueError:
            raise ReaderError(path, f"line {lineno}: expected '<file index>\\t<trial>', got "
                                    f"{line!r}") from None
        if idx in out:
            raise ReaderError(path, f"line {lineno}: file index {idx} listed twice")
        if trial in seen_trials:
            raise ReaderError(path, f"line {lineno}: trial {trial} already mapped to file "
                                    f"index {seen_trials[trial]}")
        out[idx] = trial
        seen_trials[trial] = idx
    return out


def _header_rows(path: Path) -> int:
    """3 for single-animal CSVs (scorer, bodyparts, coords), 4 for multi-animal ones
    (scorer, individuals, bodyparts, coords)."""
    with open(path, "r", newline="") as fh:
        first = [fh.readline().split(",", 1)[0].strip() for _ in range(4)]
    if first[0] != "scorer":
        raise ReaderError(path, f"not a DeepLabCut CSV: first header row starts with "
                                f"{first[0]!r}, expected 'scorer'")
    if first[1] == "individuals":
        if first[2] != "bodyparts" or first[3] != "coords":
            raise ReaderError(path, "multi-animal header must be scorer, individuals, "
                                    "bodyparts, coords")
        return 4
    if first[1] != "bodyparts" or first[2] != "coords":
        raise ReaderError(path, f"header rows are {first[:3]}; expected scorer, bodyparts, "
                                "coords")
    return 3


def read_dlc_csv(path: str | Path, required_parts=MAP_FEATURES,
                 individual: str | None = None) -> DlcTrack:
    """Read one DLC output CSV.

    required_parts: MAP feature names (or CSV body-part names) that must be present; a missing
    one is a ReaderError naming it. Multi-animal files: pass ``individual``, or leave None when
    the file has a single individual (plus maDLC's 'single' unique body parts, which are
    included)."""
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "does not exist")
    if path.stat().st_size == 0:
        raise ReaderError(path, "empty file (0 bytes); expected a DeepLabCut CSV")
    try:
        n_header = _header_rows(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(path, f"cannot read: {exc}") from None
    try:
        df = pd.read_csv(path, header=list(range(n_header)), index_col=0)
    except Exception as exc:  # pandas raises several parser error types
        raise ReaderError(path, f"unparseable DeepLabCut CSV: {type(exc).__name__}: {exc}") \
            from None

    cols = df.columns
    scorer = str(cols.get_level_values(0)[0]) if len(cols) else ""
    if n_header == 4:
        inds = [i for i in dict.fromkeys(cols.get_level_values(1)) if i != "single"]
        if individual is None:
            if len(inds) > 1:
                raise ReaderError(path, f"several individuals ({', '.join(inds)}); choose one")
            individual = inds[0] if inds else None
        elif individual not in inds:
            raise ReaderError(path, f"individual {individual!r} not in the file "
                                    f"(has {', '.join(inds)})")
        keep = [c for c in cols if c[1] in (individual, "single")]
        columns = {(c[2], c[3]): c for c in keep}
    else:
        columns = {(c[1], c[2]): c for c in cols}

    by_part: dict[str, dict[str, tuple]] = {}
    for (part, coord), c in columns.items():
        by_part.setdefault(part, {})[coord] = c

    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for part, coord_cols in by_part.items():
        missing = [c for c in COORDS if c not in coord_cols]
        if missing:
            raise ReaderError(path, f"body part {part!r} lacks coordinate(s) {', '.join(missing)}")
        name = FEATURE_OF_PART.get(part, part)
        if name in parts:
            raise ReaderError(path, f"body part {name!r} appears twice (as {part!r})")
        arrays = []
        for c in COORDS:
            try:
                arrays.append(pd.to_numeric(df[coord_cols[c]], errors="raise")
                              .to_numpy(dtype=float))
            except (ValueError, TypeError):
                raise ReaderError(path, f"body part {part!r} column {c!r} is not numeric") \
                    from None
        parts[name] = tuple(arrays)

    absent = [p for p in required_parts if FEATURE_OF_PART.get(p, p) not in parts]
    if absent:
        raise ReaderError(path, f"missing required body part(s): {', '.join(absent)} "
                                f"(file has {', '.join(by_part) or 'none'})")
    try:
        frame_index = np.asarray(df.index, dtype=np.int64)
    except (ValueError, TypeError):
        raise ReaderError(path, "first column (frame index) is not integer") from None
    return DlcTrack(n_frames=len(df), parts=parts, scorer=scorer, frame_index=frame_index)

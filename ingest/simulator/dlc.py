"""DeepLabCut per-trial CSVs and the per-camera trial map, MAP tracking layout.

Folder `tracking/<h2o>/<h2o>_<mmddyy>[_<k>]/` (k as for the ephys run: the k-th later session
that day). Trial map `<h2o>_<mmddyy>_<campos>.txt`: lines `<file index>\t<Bpod trial number>`
for the trials the camera filmed (unfilmed trials are simply absent). CSV per filmed trial:
`<h2o>_<mmddyy>_<campos>_<NNN>-0000DLC_resnet50_<task><MonDD>shuffle1_<iters>.csv`, NNN the
3-digit file index. Frames = round(trial duration * fps); tongue likelihood is high only
within 60 ms after a lick."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .model import BODY_PARTS, Session

ITERS = 1030000


def scorer(campos: str) -> str:
    return f"DLC_resnet50_MAP_{campos}Jan18shuffle1_{ITERS}"


def session_dir(root: Path, s: Session) -> Path:
    return root / "tracking" / s.h2o / f"{s.h2o}_{s.start:%m%d%y}{s.suffix}"


def csv_name(s: Session, campos: str, index: int) -> str:
    return f"{s.h2o}_{s.start:%m%d%y}_{campos}_{index:03d}-0000{scorer(campos)}.csv"


def n_frames(duration: float, fps: int) -> int:
    return int(round(duration * fps))


def frames(rng: np.random.Generator, tr, fps: int, parts=BODY_PARTS) -> np.ndarray:
    """(n_frames, 3 * len(parts)) x, y, likelihood per body part."""
    n = n_frames(tr.duration, fps)
    t = np.arange(n) / fps
    licks = np.array(sorted(tr.licks_left + tr.licks_right))
    near = np.zeros(n, bool)
    for lk in licks:
        near |= (t >= lk) & (t < lk + 0.06)
    base = {"nose": (160, 90), "tongue": (170, 140), "jaw": (150, 130), "left_paw": (120, 200),
            "right_paw": (200, 200), "lickport": (175, 150)}
    cols = []
    for part in parts:
        x0, y0 = base[part]
        x = x0 + rng.normal(0, 1.0, n)
        y = y0 + rng.normal(0, 1.0, n)
        lik = rng.uniform(0.95, 1.0, n)
        if part == "tongue":
            y = y + 15 * near
            lik = np.where(near, rng.uniform(0.9, 1.0, n), rng.uniform(0.0, 0.1, n))
        elif part == "jaw":
            y = y + 8 * near
        cols += [x, y, lik]
    return np.column_stack(cols) if cols else np.zeros((n, 0))


def write_csv(path: Path, campos: str, data: np.ndarray, parts=BODY_PARTS) -> None:
    sc = scorer(campos)
    head = ["scorer," + ",".join([sc] * 3 * len(parts)),
            "bodyparts," + ",".join(p for p in parts for _ in range(3)),
            "coords," + ",".join(c for _ in parts for c in ("x", "y", "likelihood"))]
    buf = io.StringIO()
    idx = np.arange(len(data)).reshape(-1, 1)
    fmt = ["%d"] + ["%.4f", "%.4f", "%.6f"] * len(parts)
    np.savetxt(buf, np.hstack([idx, data]), fmt=fmt, delimiter=",")
    path.write_text("\n".join(head) + "\n" + buf.getvalue())


def write_tracking(root: Path, s: Session, fps: int, rng: np.random.Generator) -> dict:
    """Trial maps and CSVs for every camera; returns the manifest's `tracking` entry."""
    d = session_dir(root, s)
    d.mkdir(parents=True, exist_ok=True)
    by_num = {t.number: t for t in s.trials}
    out = {"dir": str(d.relative_to(root)), "fps": fps, "cameras": {}}
    for campos, filmed in s.tracked.items():
        mp = d / f"{s.h2o}_{s.start:%m%d%y}_{campos}.txt"
        mp.write_text("".join(f"{k}\t{num}\n" for k, num in filmed))
        trials = []
        for k, num in filmed:
            p = d / csv_name(s, campos, k)
            data = frames(rng, by_num[num], fps)
            write_csv(p, campos, data)
            trials.append({"trial": num, "file_index": k, "frames": len(data),
                           "csv": str(p.relative_to(root))})
        out["cameras"][campos] = {"trial_map": str(mp.relative_to(root)), "trials": trials}
    return out

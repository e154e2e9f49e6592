"""The discovery-benchmark tree: ~74,000 small Bpod-named files (the IBL behaviour release's
file count) under `bench_files/behavior/<h2o>/delay_task/Session Data/`.

Every file holds the same bytes (one valid 1-trial SessionData .mat, so a reader can open any
of them); only names differ. They are for timing file discovery, not ingest: their h2os are
not registered and their sessions are not in the manifest's `sessions`."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from .bpod import session_data
from .matfile import save_v5
from .model import PROTOCOL, SCALES, Session, make_trials

PER_H2O = 740


def write_bench_files(root: Path, n_files: int, seed: int) -> dict:
    base = root / "bench_files" / "behavior"
    rng = np.random.default_rng([seed, 31337])
    start0 = dt.datetime(2019, 1, 7, 9, 0, 0)
    s = Session(h2o="bf000", subject_id=None, start=start0, day_index=0, session_number=None,
                trials=make_trials(rng, SCALES["tiny"], 1, 1.0))
    tmp = base / "_template.mat"
    base.mkdir(parents=True, exist_ok=True)
    save_v5(tmp, {"SessionData": session_data(s)}, start0)
    blob = tmp.read_bytes()
    tmp.unlink()
    n_h2o = (n_files + PER_H2O - 1) // PER_H2O
    written = 0
    for h in range(n_h2o):
        h2o = f"bf{h:03d}"
        d = base / h2o / PROTOCOL / "Session Data"
        d.mkdir(parents=True, exist_ok=True)
        for k in range(min(PER_H2O, n_files - written)):
            t = start0 + dt.timedelta(hours=6 * k, seconds=h)
            (d / f"{h2o}_{PROTOCOL}_{t:%Y%m%d_%H%M%S}.mat").write_bytes(blob)
            written += 1
    return {"dir": "bench_files", "n_files": written, "n_h2o": n_h2o, "file_size": len(blob)}

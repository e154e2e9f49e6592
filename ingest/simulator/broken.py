"""Deliberately broken inputs, each in its own otherwise complete session of subject `br90`.

`br90` is registered in subjects.yaml, so ingest reaches every broken file. The unreadable
directory is a symlink loop (`imec0_ks2 -> imec0_ks2`): listing or opening it fails with
ELOOP ("Too many levels of symbolic links") even for root, unlike chmod 000, which root
ignores. Each case: {case, path (relative to root), kind, session {h2o, date, start_time,
session_number}, reason (words the reader's error should contain)}."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .dlc import csv_name, frames, session_dir, write_csv
from .kilosort import ks_dir
from .model import BODY_PARTS, SCALES, Session, build_plan
from .spikeglx import bin_path, bitcode_edges, run_dir, write_lines
from .video import video_dir

BROKEN_H2O = "br90"
CASES = ("truncated_mat", "npy_wrong_shape", "npy_wrong_dtype", "meta_missing_samprate",
         "bitcode_mismatch", "spikes_past_end", "dlc_missing_bodypart", "zero_byte_video",
         "unreadable_directory")

BROKEN_SCALE = dataclasses.replace(SCALES["tiny"], n_trials=(5, 6), n_units=(4, 4), n_saved=8)


def broken_plan(seed: int):
    """One subject with one plain Kilosort session per case."""
    return build_plan(1, len(CASES), BROKEN_SCALE, seed + 100_003, h2o_names=[BROKEN_H2O],
                      same_day=False, all_ephys_kilosort=True, unregistered=False)


def _sess(s: Session) -> dict:
    return {"h2o": s.h2o, "date": f"{s.start:%Y-%m-%d}", "start_time": f"{s.start:%H:%M:%S}",
            "session_number": s.session_number, "behavior_file": s.behavior_relpath}


def apply(root: Path, sessions: list, seed: int) -> list:
    """Break one file per session (sessions[i] gets CASES[i]); returns the case list."""
    rng = np.random.default_rng([seed, 4242])
    out = []
    for case, s in zip(CASES, sessions):
        p = s.ephys.probes[0]
        kd = ks_dir(root, s, p)
        if case == "truncated_mat":
            f = root / s.behavior_relpath
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 2])
            kind, reason = "behavior", "truncated"
        elif case == "npy_wrong_shape":
            f = kd / "spike_times.npy"
            st = np.load(f)
            np.save(f, np.column_stack([st, st]))  # (n, 2): not a vector of sample indices
            kind, reason = "ephys", "shape"
        elif case == "npy_wrong_dtype":
            f = kd / "spike_clusters.npy"
            np.save(f, np.load(f).astype(np.float64))
            kind, reason = "ephys", "dtype"
        elif case == "meta_missing_samprate":
            f = bin_path(root, s, p).with_suffix(".meta")
            lines = [ln for ln in f.read_text().splitlines(True) if not ln.startswith("imSampRate=")]
            f.write_text("".join(lines))
            kind, reason = "ephys", "imSampRate"
        elif case == "bitcode_mismatch":
            d = run_dir(root, s)
            f = d / f"{s.ephys.run}_g0_tcat.nidq.XA_1_2.txt"
            starts = np.loadtxt(d / f"{s.ephys.run}_g0_tcat.nidq.XA_0_0.txt", ndmin=1)
            wrong = [t.bitcode ^ 0b1010101010 for t in s.trials]
            write_lines(f, bitcode_edges(starts, wrong))
            mat = d / f"{s.h2o}_{s.date_str}_bitcode.mat"
            if mat.exists():
                mat.unlink()  # the sync edges are the only (and wrong) bitcode source
            kind, reason = "ephys", "bitcode"
        elif case == "spikes_past_end":
            f = kd / "spike_times.npy"
            st = np.load(f)
            n = s.ephys.n_samples
            st[-3:] = n + np.array([10, 500, 30000], dtype=st.dtype)
            np.save(f, st)
            kind, reason = "ephys", "past the end"
        elif case == "dlc_missing_bodypart":
            cam, filmed = next(iter(s.tracked.items()))
            k, num = filmed[0]
            f = session_dir(root, s) / csv_name(s, cam, k)
            parts = tuple(b for b in BODY_PARTS if b != "tongue")
            tr = next(t for t in s.trials if t.number == num)
            write_csv(f, cam, frames(rng, tr, BROKEN_SCALE.fps, parts), parts)
            kind, reason = "tracking", "tongue"
        elif case == "zero_byte_video":
            cam, filmed = next(iter(s.tracked.items()))
            k, _ = filmed[0]
            f = video_dir(root, s) / f"{s.h2o}_{cam}_{k:03d}-0000.avi"
            f.write_bytes(b"")
            kind, reason = "video", "empty"
        elif case == "unreadable_directory":
            f = kd
            for child in sorted(kd.iterdir()):
                child.unlink()
            kd.rmdir()
            os.symlink(kd.name, kd)  # imec0_ks2 -> imec0_ks2: ELOOP for everyone
            kind, reason = "ephys", "symbolic links"
        out.append({"case": case, "path": f.relative_to(root).as_posix(), "kind": kind,
                    "session": _sess(s), "reason": reason})
    missing = "behavior_missing_share"
    out.append({"case": "missing_share_path", "path": missing, "kind": "share", "session": {},
                "reason": "does not exist"})
    return out

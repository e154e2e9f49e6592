"""The ground-truth manifest: what every file in the share should say.

Rendered from the plan (never from re-reading files), except the `files` inventory (size and
MD5 of every regular file, walked from disk after writing). Schema documented in
ingest/simulator/__init__.py."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .model import RIG, SharePlan, Session, stim_code

SCHEMA_VERSION = 1


def md5_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def inventory(root: Path) -> tuple[dict, dict]:
    """(files, symlinks): every regular file (not following links) with size and MD5, and
    every symlink with its target. manifest.json itself is excluded."""
    files, links = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        dp = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = dp / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                links[rel] = os.readlink(p)
            elif name in filenames and rel != "manifest.json":
                files[rel] = {"size": p.stat().st_size, "md5": md5_file(p)}
    return dict(sorted(files.items())), dict(sorted(links.items()))


def trial_entry(tr) -> dict:
    return {
        "number": tr.number, "protocol_type": tr.protocol_type, "instruction": tr.instruction,
        "trial_type_code": tr.trial_type_code, "outcome": tr.outcome, "early_lick": tr.early_lick,
        "auto_water": tr.auto_water, "bitcode": tr.bitcode, "start": tr.start, "end": tr.end,
        "go_cue": tr.go_cue,
        "states": {k: v for k, v in tr.states.items() if v},
        "licks_left": tr.licks_left, "licks_right": tr.licks_right,
        "stim_code": stim_code(tr),
    }


def session_entry(s: Session, extra: dict) -> dict:
    e = {
        "h2o": s.h2o, "subject_id": s.subject_id, "registered": s.subject_id is not None,
        "rig": RIG, "date": f"{s.start:%Y-%m-%d}", "start_time": f"{s.start:%H:%M:%S}",
        "session_number": s.session_number, "same_day_index": s.day_index,
        "behavior_file": s.behavior_relpath, "n_trials": len(s.trials),
        "n_trials_ingestable": sum(t.protocol_type >= 3 for t in s.trials),
        "trials": [trial_entry(t) for t in s.trials],
        "ephys": None, "tracking": None, "videos": [], "histology": {},
    }
    e.update(extra)
    return e


def config_paths(root: Path) -> dict:
    r = root.resolve()
    return {f"{k}_data_paths": [[RIG, str(r / k), 0]]
            for k in ("behavior", "ephys", "tracking", "video", "histology", "ccf")}


def build(root: Path, plan: SharePlan, sessions: list, ccf: dict, extra: dict | None = None) -> dict:
    files, links = inventory(root)
    m = {
        "schema_version": SCHEMA_VERSION,
        "generator": "ingest.simulator",
        "scale": plan.scale.name, "seed": plan.seed,
        "rig": RIG,
        "registered_h2o": [s.h2o for s in plan.subjects],
        "unregistered_h2o": [plan.unregistered_h2o] if plan.unregistered_h2o else [],
        "subjects": [{"subject_id": s.subject_id, "h2o": s.h2o, "sex": s.sex} for s in plan.subjects],
        "conventions": CONVENTIONS,
        "sessions": sessions,
        "ccf": ccf,
        "paths": config_paths(root),
        "files": files,
        "symlinks": links,
    }
    if extra:
        m.update(extra)
    (root / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=False) + "\n")
    return m


CONVENTIONS = {
    "clock": "ephys_time_s = bpod_time_s + ephys.clock_offset_s; trial 'start' is Bpod "
             "TrialStartTimestamp; state/lick times are relative to the trial start",
    "bitcode_edges": "XA_1_2.txt lists rising edges; after trial start s_i (XA_0_0.txt) bit k "
                     "(k=0 is the MSB of the 10-bit code) is 1 iff an edge lies at "
                     "s_i + 0.010 + 0.004*k (s)",
    "trial_types": "SessionData.TrialTypes 1 = left, 0 = right",
    "probe_number": "MAP probe = imec index + 1",
    "quality": "curated cluster_group.tsv wins over cluster_KSLabel.tsv; JRCLUST "
               "single/multi/noise -> good/mua/noise",
    "jrclust_spike_times": "spikeTimes are 1-based MATLAB sample indices",
    "histology_shank": "channel_locations_shank<S>.json, S 1-based",
    "coordinates": "x = ccf_ml - 5739, y = 5400 - ccf_ap, z = 332 - ccf_dv (um)",
}

#!/usr/bin/env python
"""Discovery of the 74,000-file bench share: first scan and a re-scan with nothing changed,
beside IBL's ONE indexing an ALF tree of the same file count; and the behaviour ingest rate.

    python bench/bench_discovery.py            (backend from DJ_* variables, embedded otherwise)

Each measured step runs in a fresh child process, so its wall time and peak memory are its own.
Prints the figures and writes bench/results/discovery.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the run's schema prefix before pipeline modules load)

SCAN = """
import json, sys, time
sys.path.insert(0, {repo!r})
import bench.common as common
from pipeline import config
from ingest import share
import ingest.behavior
config.set_active(config.load_config(check_paths=False).with_custom({{"behavior_data_paths": [["RRig", {root!r}, 0]]}}, "bench"))
from pipeline import db
db.connection()
before = common.peak_rss_mb()
started = time.perf_counter()
report = share.scan(["behavior"])[0]
wall = time.perf_counter() - started
print(json.dumps({{"wall_s": wall, "record_s": report.seconds, "files": report.present, "new": len(report.new),
                  "unchanged": report.unchanged, "peak_rss_mb": common.peak_rss_mb(), "rss_before_mb": before}}))
"""

ONE_SETUP = """
import json, sys, time
sys.path.insert(0, {repo!r})
import bench.common as common
before = common.peak_rss_mb()
from one.api import One
started = time.perf_counter()
one = One.setup({root!r}, hash_files=False, silent=True)
wall = time.perf_counter() - started
print(json.dumps({{"wall_s": wall, "datasets": len(one._cache["datasets"]), "peak_rss_mb": common.peak_rss_mb(),
                  "rss_before_mb": before}}))
"""

INGEST = """
import json, sys, time
sys.path.insert(0, {repo!r})
import bench.common as common
from pipeline import config
config.set_active(config.load_config(check_paths=False).with_custom({paths!r}, "bench"))
from pipeline.subject_loader import load_subject_file
load_subject_file(__import__("pathlib").Path({subjects!r}))
from ingest import share, behavior
from ingest.runner import run_ingest
from pipeline import experiment
share.scan(["behavior"])
started = time.perf_counter()
summary = run_ingest(behavior.BehaviorIngest, progress=False)
wall = time.perf_counter() - started
trials = len(experiment.SessionTrial())
print(json.dumps({{"wall_s": wall, "sessions": summary.inserted, "failed": summary.failed, "trials": trials,
                  "events": len(experiment.TrialEvent()), "licks": len(experiment.ActionEvent()),
                  "peak_rss_mb": common.peak_rss_mb()}}))
"""


def run_child(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_alf_tree(root: Path, n_files: int) -> Path:
    """An ALF tree (lab/Subjects/subject/date/number/alf/object.attribute.npy) of n_files small files."""
    tree = root / "alf-tree"
    marker = tree / f".complete-{n_files}"
    if marker.exists():
        return tree
    attributes = [f"{obj}.{attr}" for obj in ("_ibl_trials", "_ibl_wheel", "_ibl_leftCamera", "licks", "spikes")
                  for attr in ("times", "intervals", "position", "choice", "feedbackType", "contrastLeft",
                               "contrastRight", "probabilityLeft", "rewardVolume", "goCue_times")]
    per_session = len(attributes)
    written = 0
    session = 0
    while written < n_files:
        subject, day, number = session // 200, session % 200 // 2, session % 2 + 1
        folder = tree / "cortexlab" / "Subjects" / f"SW{subject:03d}" / f"2020-{1 + day // 28:02d}-{1 + day % 28:02d}" / f"{number:03d}" / "alf"
        folder.mkdir(parents=True, exist_ok=True)
        for attr in attributes[: min(per_session, n_files - written)]:
            (folder / f"{attr}.npy").write_bytes(b"\x93NUMPY" + bytes(58))
            written += 1
        session += 1
    marker.write_text("")
    return tree


def main() -> None:
    root, manifest = common.bench_share()
    files_root = root / manifest["bench_files"]["dir"] / "behavior"
    n_files = manifest["bench_files"]["n_files"]
    repo = str(common.REPO)
    figures = {"backend": common.backend_label(), "files": n_files}
    try:
        first = run_child(SCAN.format(repo=repo, root=str(files_root)))
        again = run_child(SCAN.format(repo=repo, root=str(files_root)))
        assert first["new"] == n_files and again["unchanged"] == n_files and again["new"] == 0
        figures["first_scan"] = first
        figures["rescan"] = again
    finally:
        common.drop_run_schemas()

    alf = make_alf_tree(common.bench_dir(), n_files)
    for stale in alf.glob("*.pqt"):
        stale.unlink()
    figures["one_setup"] = run_child(ONE_SETUP.format(repo=repo, root=str(alf)))

    try:
        figures["behavior_ingest"] = run_child(INGEST.format(repo=repo, paths=manifest["paths"], subjects=str(root / "subjects.yaml")))
        b = figures["behavior_ingest"]
        b["trials_per_s"] = b["trials"] / b["wall_s"]
    finally:
        common.drop_run_schemas()

    one_s = figures["one_setup"]["wall_s"]
    print(f"backend: {figures['backend']}; share: {n_files} files")
    print(f"first scan (record + session keys): {first['wall_s']:.2f} s (record alone {first['record_s']:.2f} s), "
          f"peak RSS {first['peak_rss_mb']:.0f} MB ({first['rss_before_mb']:.0f} MB before the scan)")
    print(f"re-scan, nothing changed:           {again['wall_s']:.2f} s, peak RSS {again['peak_rss_mb']:.0f} MB")
    print(f"ONE.setup(hash_files=False) on an ALF tree of {figures['one_setup']['datasets']} files: {one_s:.2f} s, "
          f"peak RSS {figures['one_setup']['peak_rss_mb']:.0f} MB")
    print(f"first scan / ONE = {first['wall_s'] / one_s:.2f} (target < 0.25); re-scan target < 1 s")
    print(f"behaviour ingest: {b['sessions']} session(s), {b['trials']} trials in {b['wall_s']:.2f} s = "
          f"{b['trials_per_s']:.0f} trials/s ({b['events']} events, {b['licks']} licks)")
    figures["first_scan_over_one"] = first["wall_s"] / one_s
    common.write_results("discovery", figures)


if __name__ == "__main__":
    main()

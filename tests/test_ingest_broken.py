"""Broken inputs fail their own session with a clear message, harm nothing else, and load once fixed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import RUN_DIR, use_share_paths, wipe_pipeline_data


def good_copy(seed: int, relpath: str) -> bytes:
    """The bytes a broken file had before the catalogue broke it (same plan, rendered untouched)."""
    from ingest.simulator import broken
    from ingest.simulator.share import render

    clean = RUN_DIR / f"unbroken-{seed}"
    if not clean.exists():
        render(clean, broken.broken_plan(seed), common=False)
    return (clean / relpath).read_bytes()


@pytest.fixture(scope="module")
def broken_run(modules):
    from ingest import behavior, share, tracking
    from ingest.runner import run_ingest
    from ingest.simulator import write_broken_catalogue
    from pipeline.subject_loader import load_subject_file

    root = RUN_DIR / "broken-share"
    cases = {c["case"]: c for c in write_broken_catalogue(root, seed=3)}
    import json

    manifest = json.loads((root / "manifest.json").read_text())
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    share.scan(["behavior", "tracking", "ephys"])
    summaries = {"behavior": run_ingest(behavior.BehaviorIngest, progress=False),
                 "tracking": run_ingest(tracking.TrackingIngest, progress=False)}
    yield {"root": root, "cases": cases, "manifest": manifest, "summaries": summaries, "modules": modules}
    wipe_pipeline_data(modules)


def test_truncated_mat_fails_only_its_session(broken_run):
    experiment = broken_run["modules"]["experiment"]
    case = broken_run["cases"]["truncated_mat"]
    summary = broken_run["summaries"]["behavior"]
    assert summary.failed == 1
    assert len(summary.errors) == 1
    message = summary.errors[0]
    assert Path(case["path"]).name in message and "truncated" in message
    registered = [s for s in broken_run["manifest"]["sessions"] if s["registered"]]
    assert summary.inserted == len(registered) - 1
    # nothing half-inserted: no session, no trials for that day of that subject
    assert len(experiment.Session & f"session_date = '{case['session']['date']}'") == 0
    assert len(experiment.SessionTrial & (experiment.Session & f"session_date = '{case['session']['date']}'")) == 0


def test_dlc_missing_body_part_fails_only_its_tracking(broken_run):
    tracking = broken_run["modules"]["tracking"]
    experiment = broken_run["modules"]["experiment"]
    case = broken_run["cases"]["dlc_missing_bodypart"]
    summary = broken_run["summaries"]["tracking"]
    assert summary.failed == 1
    assert Path(case["path"]).name in summary.errors[0] and "missing required body part" in summary.errors[0]
    failed_session = experiment.Session & f"session_date = '{case['session']['date']}'"
    assert len(failed_session) == 1  # its behaviour went in
    assert len(tracking.Tracking & failed_session) == 0  # none of its tracking did
    assert summary.inserted >= 1 and len(tracking.Tracking()) > 0


def test_mapshell_errors_lists_file_and_reason(broken_run, capsys):
    from pipeline.shell import main

    assert main(["errors"]) == 0
    out = capsys.readouterr().out
    for case in ("truncated_mat", "dlc_missing_bodypart"):
        assert Path(broken_run["cases"][case]["path"]).name in out
    unreadable = broken_run["cases"]["unreadable_directory"]["path"]
    assert f"{unreadable.split('/', 1)[1]}: cannot read" in out and "Too many levels of symbolic links" in out


def test_raw_files_untouched(broken_run):
    root = broken_run["root"]
    for rel, entry in broken_run["manifest"]["files"].items():
        path = root / rel
        assert path.stat().st_size == entry["size"], rel
        assert hashlib.md5(path.read_bytes()).hexdigest() == entry["md5"], rel


def test_fixed_files_load_on_the_next_run(broken_run):
    from ingest import behavior, share, tracking
    from ingest.runner import run_ingest

    experiment, tracking_schema = broken_run["modules"]["experiment"], broken_run["modules"]["tracking"]
    root = broken_run["root"]
    sessions_before = len(experiment.Session())
    for case in ("truncated_mat", "dlc_missing_bodypart"):
        rel = broken_run["cases"][case]["path"]
        (root / rel).write_bytes(good_copy(3, rel))
    try:
        share.scan(["behavior", "tracking"])
        fixed = run_ingest(behavior.BehaviorIngest, progress=False)
        assert (fixed.inserted, fixed.failed) == (1, 0), fixed.errors
        assert len(experiment.Session()) == sessions_before + 1
        date = broken_run["cases"]["truncated_mat"]["session"]["date"]
        fixed_session = (experiment.Session & f"session_date = '{date}'").to_dicts()[0]
        assert fixed_session["session"] == broken_run["cases"]["truncated_mat"]["session"]["session_number"]
        tracked = run_ingest(tracking.TrackingIngest, progress=False)
        assert tracked.failed == 0 and tracked.inserted >= 1
        dlc_date = broken_run["cases"]["dlc_missing_bodypart"]["session"]["date"]
        assert len(tracking_schema.Tracking & (experiment.Session & f"session_date = '{dlc_date}'")) > 0
    finally:
        shutil.rmtree(RUN_DIR / "unbroken-3", ignore_errors=True)

"""Ingest as real processes: killed with SIGKILL mid-populate, and several at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import RUN_DIR, use_share_paths, wipe_pipeline_data


@pytest.fixture(scope="module")
def many_sessions(modules):
    """A share with enough sessions that an ingest takes a while, and a config file naming it."""
    from ingest.simulator import simulate_share

    root = RUN_DIR / "many-sessions"
    manifest = simulate_share(root, subjects=2, sessions=6, scale="tiny", seed=11)
    config_file = RUN_DIR / "many-sessions.json"
    config_file.write_text(json.dumps({"safemode": False, "custom": manifest["paths"]}))
    yield root, manifest, config_file
    wipe_pipeline_data(modules)


def fresh_start(modules, root, manifest) -> None:
    from ingest import share
    from pipeline.subject_loader import load_subject_file

    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    share.scan(["behavior"])


def ingest_process(config_file) -> subprocess.Popen:
    env = {**os.environ, "MAP_CONFIG": str(config_file)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.shell", "ingest-behavior", "--no-scan", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def expected_trials(manifest) -> dict:
    return {(s["subject_id"], s["session_number"]): s["n_trials_ingestable"] for s in manifest["sessions"] if s["registered"]}


def assert_complete_sessions_only(experiment, behavior) -> None:
    """Every session in the database is whole: its ingest record and all its trials."""
    for session in experiment.Session().to_dicts():
        key = {"subject_id": session["subject_id"], "session": session["session"]}
        assert len(behavior.BehaviorIngest & key) == 1, f"session {key} without its ingest record"


def test_sigkill_mid_populate_then_rerun(modules, many_sessions):
    from ingest import behavior
    from ingest.runner import run_ingest

    experiment = modules["experiment"]
    root, manifest, config_file = many_sessions
    expected = expected_trials(manifest)
    caught = False
    for _ in range(5):
        fresh_start(modules, root, manifest)
        proc = ingest_process(config_file)
        jobs = behavior.BehaviorIngest().jobs
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if len(jobs.reserved) == 1:  # a job is reserved only while its make() runs
                proc.send_signal(signal.SIGKILL)
                caught = True
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
        if caught and len(jobs.reserved) == 1:  # killed inside a make(), not between two
            break
        caught = False
    assert caught, "the ingest process always finished before it could be killed inside a make()"
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = len(behavior.BehaviorIngest())
    assert done_at_kill < len(expected)
    assert_complete_sessions_only(experiment, behavior)  # the killed session left nothing behind
    for key, n in expected.items():
        if experiment.Session & dict(zip(("subject_id", "session"), key)):
            assert len(experiment.SessionTrial & dict(zip(("subject_id", "session"), key))) == n

    summary = run_ingest(behavior.BehaviorIngest, progress=False)
    assert summary.recovered >= 1  # the dead worker's reservation was noticed and released
    assert summary.failed == 0 and summary.inserted == len(expected) - done_at_kill
    assert len(experiment.Session()) == len(expected)
    for key, n in expected.items():
        assert len(experiment.SessionTrial & dict(zip(("subject_id", "session"), key))) == n
    assert len(behavior.BehaviorIngest().jobs.reserved) == 0


def test_three_processes_share_the_work(modules, many_sessions):
    from ingest import behavior

    experiment = modules["experiment"]
    root, manifest, config_file = many_sessions
    expected = expected_trials(manifest)
    fresh_start(modules, root, manifest)
    procs = [ingest_process(config_file) for _ in range(3)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outputs]
    inserted = [int(out.split("BehaviorIngest: ")[1].split(" inserted")[0]) for out, _ in outputs]
    assert sum(inserted) == len(expected)  # each session made by exactly one process
    assert len(behavior.BehaviorIngest().jobs.errors) == 0
    assert {(r["subject_id"], r["session"]) for r in experiment.Session().to_dicts()} == set(expected)
    for key, n in expected.items():
        assert len(experiment.SessionTrial & dict(zip(("subject_id", "session"), key))) == n

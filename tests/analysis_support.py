"""Shared by tests/test_analysis*.py: a small simulated session ingested, and the computed tables emptied."""

from __future__ import annotations

import json

from tests.conftest import RUN_DIR, use_share_paths, wipe_pipeline_data

SHARE = RUN_DIR / "analysis-share"


def analysis_share() -> dict:
    """One subject, one session at 'small' scale (two probes, ~50 units, ~60 trials), written once."""
    from ingest.simulator import simulate_share

    if (SHARE / "manifest.json").exists():
        return json.loads((SHARE / "manifest.json").read_text())
    return simulate_share(SHARE, subjects=1, sessions=1, scale="small", seed=3)


def clear_computed() -> None:
    """Empty every computed table of automate-computation and its job table."""
    from pipeline.analysis_commands import computation_tables

    for table in reversed(computation_tables()):
        table().delete(prompt=False)
        table().jobs.delete_quick()


def ingest_analysis_share(modules) -> dict:
    """Wipe, then scan and ingest behaviour, ephys and tracking of the analysis share."""
    from ingest import behavior, share
    from ingest import ephys as ingest_ephys
    from ingest import tracking as ingest_tracking
    from ingest.runner import run_ingest
    from pipeline.subject_loader import load_subject_file

    manifest = analysis_share()
    clear_computed()
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(SHARE / "subjects.yaml")
    share.scan(["behavior", "ephys", "tracking"])
    for table in (behavior.BehaviorIngest, ingest_ephys.EphysIngest, ingest_tracking.TrackingIngest):
        summary = run_ingest(table, progress=False)
        assert summary.failed == 0 and summary.inserted == 1, summary.errors
    return manifest


def session_of(manifest) -> tuple[dict, dict]:
    s = manifest["sessions"][0]
    return s, {"subject_id": s["subject_id"], "session": s["session_number"]}

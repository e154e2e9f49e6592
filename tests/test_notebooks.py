"""The example notebooks run, cell by cell, against a freshly ingested simulated share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import use_share_paths, wipe_pipeline_data

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def loaded(modules, tiny_share):
    from ingest.commands import INGEST_STAGES, _scan_lines
    from ingest.runner import run_ingest
    from pipeline import ccf, ccf_commands, config, ephys, psth
    from pipeline.subject_loader import load_subject_file

    root, manifest = tiny_share
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    for source in ccf_commands.default_sources(config.active().data_paths("ccf_data_paths")):
        ccf.load_ccf(source.nrrd, source.ontology, version_name="notebook_test", resolution=source.resolution)
    _scan_lines(("behavior", "ephys", "tracking", "histology"))
    for stage in INGEST_STAGES:
        assert run_ingest(stage.load_table(), progress=False).failed == 0
    first_insertion = ephys.ProbeInsertion.keys()[0]
    psth.UnitPsth.populate(ephys.Unit & first_insertion)
    yield root, manifest
    wipe_pipeline_data(modules)  # first: unit regions refer to the atlas
    (ccf.AnnotationVersion & {"annotation_version": "notebook_test"}).delete(prompt=False)


def run_notebook(path: Path) -> dict:
    namespace: dict = {}
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name} cell {i}", "exec"), namespace)
    return namespace


def test_overview_notebook_runs_and_shows_the_data(loaded):
    root, manifest = loaded
    ns = run_notebook(NOTEBOOKS / "Overview.ipynb")
    registered = [s for s in manifest["sessions"] if s["registered"]]
    assert len(ns["sessions"]) == len(registered)
    for s in registered:
        trials = [t for t in s["trials"] if t["protocol_type"] >= 3]
        expected = {o: sum(t["outcome"] == o for t in trials) for o in ("hit", "miss", "ignore")}
        assert ns["outcomes"][(s["subject_id"], s["session_number"])] == expected
    session = next(s for s in registered if s["subject_id"] == ns["unit"]["subject_id"] and s["session_number"] == ns["unit"]["session"])
    assert len(ns["trial_spikes"]) == session["n_trials_ingestable"]
    assert sum(ns["region_counts"].values()) == len(ns["placed"]) > 0
    assert len(ns["rows"]) == 8  # one PSTH per trial condition

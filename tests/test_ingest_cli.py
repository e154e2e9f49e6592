"""The mapshell ingest commands as a user runs them: fresh processes, config from a file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import RUN_DIR, wipe_pipeline_data


@pytest.fixture
def cli(modules, tiny_share):
    root, manifest = tiny_share
    wipe_pipeline_data(modules)
    config_file = RUN_DIR / "cli-config.json"
    config_file.write_text(json.dumps({"safemode": False, "custom": manifest["paths"]}))
    env = {**os.environ, "MAP_CONFIG": str(config_file)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.shell", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    yield run, root, manifest
    wipe_pipeline_data(modules)


def test_load_subjects_then_ingest_all(cli, modules):
    run, root, manifest = cli
    assert run("load-subjects", str(root / "subjects.yaml")).returncode == 0
    result = run("ingest-all", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    registered = [s for s in manifest["sessions"] if s["registered"]]
    assert re.search(rf"scan behavior .*: {len(manifest['sessions'])} files \({len(manifest['sessions'])} new", result.stdout)
    assert f"BehaviorIngest: {len(registered)} inserted, 0 already in, 0 failed" in result.stdout
    assert "TrackingIngest: " in result.stdout and "not ingested: 1 behaviour file(s) of water-restriction number xx99" in result.stdout
    assert len(modules["experiment"].Session()) == len(registered)

    again = run("ingest-behavior", "--quiet")
    assert f"BehaviorIngest: 0 inserted, {len(registered)} already in, 0 failed" in again.stdout
    scan = run("scan", "behavior")
    assert re.search(r"scan behavior .*\(0 new, 0 changed, 0 vanished\)", scan.stdout)
    errors = run("errors")
    assert errors.returncode == 0 and "no errors recorded" in errors.stdout

"""mapshell simulate-share and mapshell demo, run as a new user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import PREFIX, RUN_DIR


def mapshell(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.shell", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=600)


def test_simulate_share_command_writes_share_and_manifest():
    out = RUN_DIR / "cli-share"
    result = mapshell("simulate-share", str(out), "--scale", "tiny", "--seed", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["files"] == len(manifest["files"]) and summary["sessions"] == len(manifest["sessions"])
    assert all((out / rel).stat().st_size == entry["size"] for rel, entry in manifest["files"].items())
    assert (out / "subjects.yaml").exists() and manifest["seed"] == 5


def test_demo_runs_every_stage_and_summarises(modules):
    share = RUN_DIR / "demo-share"
    env = {k: v for k, v in os.environ.items() if k != "MAP_CONFIG"}
    env["MAP_CONFIG"] = str(RUN_DIR / "dj_local_conf.json")
    result = mapshell("demo", str(share), "--scale", "tiny", "--prefix", f"{PREFIX}demo_", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    manifest = json.loads((share / "manifest.json").read_text())
    registered = sum(1 for s in manifest["sessions"] if s["registered"])
    assert "load subjects: 13 rows inserted" in out
    assert f"BehaviorIngest: {registered} inserted, 0 already in, 0 failed" in out
    assert re.search(r"load CCF: .*loaded: 132 x 80 x 114 voxels at 100 um", out)
    assert f"{PREFIX}demo_experiment:" in out
    assert re.search(r"publish, delete local copy, retrieve: \d+ data set\(s\).*bytes identical; one session deleted and fetched again", out)
    session_line = re.search(r"\n\s+Session\s+(\d+) rows", out)
    assert session_line and int(session_line.group(1)) == registered
    assert f"share: {share}" in out
    config = json.loads((share / "dj_local_conf.json").read_text())
    assert config["custom"]["database.prefix"] == f"{PREFIX}demo_"
    assert config["custom"]["behavior_data_paths"][0][1] == str(share / "behavior")
    # a second run reuses the share and inserts nothing new
    again = mapshell("demo", str(share), "--scale", "tiny", "--prefix", f"{PREFIX}demo_", env=env)
    assert again.returncode == 0 and "reused" in again.stdout
    assert "load subjects: 0 rows inserted (already loaded)" in again.stdout
    assert f"BehaviorIngest: 0 inserted, {registered} already in, 0 failed" in again.stdout


def test_demo_in_another_folder_starts_its_schemas_afresh(modules):
    env = {k: v for k, v in os.environ.items() if k != "MAP_CONFIG"}
    env["MAP_CONFIG"] = str(RUN_DIR / "dj_local_conf.json")
    prefix = f"{PREFIX}demo2_"
    first = mapshell("demo", str(RUN_DIR / "demo-a"), "--scale", "tiny", "--prefix", prefix, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    second = mapshell("demo", str(RUN_DIR / "demo-b"), "--scale", "tiny", "--prefix", prefix, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"the {prefix}* schemas held another demo share: dropped them, starting afresh" in second.stdout
    assert "load subjects: 13 rows inserted" in second.stdout
    assert "bytes identical" in second.stdout

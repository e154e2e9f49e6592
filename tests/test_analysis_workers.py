"""automate-computation as real processes: four workers share the keys, a SIGKILLed worker's job
is recovered, an error in one key does not stop the others; mapshell jobs / errors; docker-compose."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.analysis_support import clear_computed, ingest_analysis_share, session_of
from tests.conftest import EMPTY_CONFIG, wipe_pipeline_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ingested(modules):
    manifest = ingest_analysis_share(modules)
    yield manifest
    clear_computed()
    wipe_pipeline_data(modules)


def expected_keys() -> dict[str, int]:
    """Keys each computed table must end with: its key source once everything upstream is done."""
    from pipeline import ephys, experiment, psth, tracking

    n_units = len(ephys.Unit())
    return {"UnitStat": n_units, "UnitCellType": n_units, "MAPClusterMetric": n_units, "UnitPassingCriteria": n_units,
            "UnitPsth": n_units * len(psth.TrialCondition()), "PeriodSelectivity": n_units * len(experiment.Period()),
            "UnitSelectivity": n_units, "TrackingQC": len(tracking.Tracking())}


def worker(*args: str, keep_completed: bool = False) -> subprocess.Popen:
    from pipeline.analysis_commands import worker_command

    env = {**os.environ, "MAP_CONFIG": str(EMPTY_CONFIG)}
    if keep_completed:
        env["DJ_JOBS_KEEP_COMPLETED"] = "true"  # success records stay in the job tables, with host and pid
    cmd = worker_command(once=True, sleep_s=0)
    return subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def made_by(output: str) -> int:
    line = [x for x in output.splitlines() if "done: " in x][-1]
    return int(line.split("done: ")[1].split(" key")[0])


def test_four_workers_compute_each_key_once(ingested):
    from pipeline.analysis_commands import computation_tables

    clear_computed()
    procs = [worker(keep_completed=True) for _ in range(4)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-3000:] for o in outputs]
    expected = expected_keys()
    assert sum(made_by(out) for out, _ in outputs) == sum(expected.values())  # no key made twice
    pids = set()
    for table in computation_tables():
        jobs = table().jobs
        assert len(table()) == expected[table.__name__] > 0, table.__name__
        success = jobs.completed.to_dicts()
        assert len(success) == expected[table.__name__]  # one success record per key
        assert len(jobs.errors) == 0 and len(jobs.reserved) == 0 and len(jobs.pending) == 0
        pids |= {int(r["pid"]) for r in success}
    assert pids <= {p.pid for p in procs} and len(pids) >= 2  # the work was shared


def test_sigkilled_worker_job_is_recovered(ingested):
    from pipeline import psth
    from pipeline.analysis_commands import computation_tables
    from pipeline.jobs import populate_round

    caught = False
    for _ in range(5):
        clear_computed()
        proc = worker()
        jobs = psth.UnitPsth().jobs
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if len(jobs.reserved):  # a job is reserved only while its make() runs
                proc.send_signal(signal.SIGKILL)
                caught = True
                break
            time.sleep(0.002)
        proc.communicate(timeout=30)
        if caught and len(jobs.reserved):
            break
        caught = False
    assert caught, "the worker always finished before it could be killed inside a make()"
    assert proc.returncode == -signal.SIGKILL
    held = jobs.reserved.to_dicts()
    assert len(held) == 1 and int(held[0]["pid"]) == proc.pid
    done_at_kill = len(psth.UnitPsth())
    assert done_at_kill < expected_keys()["UnitPsth"]

    for _ in range(50):  # the server notices the closed connection within moments
        summary = populate_round(computation_tables())
        if summary.recovered:
            break
        time.sleep(0.1)
    assert summary.recovered == 1
    while not summary.idle:
        summary = populate_round(computation_tables())
    for table in computation_tables():
        assert len(table()) == expected_keys()[table.__name__], table.__name__
        assert len(table().jobs.reserved) == 0 and len(table().jobs.errors) == 0


def test_an_error_in_one_key_does_not_stop_the_others(ingested, capsys):
    from ingest.commands import error_lines
    from pipeline import ephys, psth
    from pipeline.analysis_commands import computation_tables, job_lines
    from pipeline.jobs import work
    from pipeline.shell import main

    clear_computed()
    s, skey = session_of(ingested)
    key = (ephys.Unit & skey).keys(order_by="KEY", limit=1)[0]
    good = (ephys.Unit & key).fetch1("spike_times")
    ephys.Unit.update1({**key, "spike_times": np.array([5.0, 1.0, 3.0])})  # a deliberately broken row
    try:
        rounds = work(computation_tables, once=True, sleep_s=0, log=lambda line: None)
        expected = expected_keys()
        broken = {"UnitStat": 1, "UnitPsth": len(psth.TrialCondition()), "PeriodSelectivity": 3}
        downstream = {"UnitPassingCriteria": 1, "UnitSelectivity": 1}  # never in their key source
        for table in computation_tables():
            name = table.__name__
            assert len(table()) == expected[name] - broken.get(name, 0) - downstream.get(name, 0), name
            errors = table().jobs.errors.to_dicts()
            assert len(errors) == broken.get(name, 0), name
            for e in errors:
                assert e["unit"] == key["unit"] and "not sorted" in e["error_message"]
                assert "check_spike_times" in str(e["error_stack"])  # the traceback is kept
        assert sum(len(r.failed.get("UnitStat", [])) for r in rounds) == 1

        lines = error_lines()
        stat_lines = [x for x in lines if x.startswith("UnitStat [")]
        assert len(stat_lines) == 1 and f"unit={key['unit']}" in stat_lines[0] and "not sorted" in stat_lines[0]
        assert "pipeline/analysis.py" in stat_lines[0] and "check_spike_times" in stat_lines[0]
        jobs = {x.split(":")[0]: x for x in job_lines()}
        assert jobs["UnitStat"] == f"UnitStat: {expected['UnitStat'] - 1} done, 0 pending, 0 reserved, 1 error(s)"
    finally:
        ephys.Unit.update1({**key, "spike_times": good})  # fixed

    assert main(["errors", "--retry"]) == 0
    out = capsys.readouterr().out
    assert f"cleared {1 + len(psth.TrialCondition()) + 3} error(s)" in out
    work(computation_tables, once=True, sleep_s=0, log=lambda line: None)
    for table in computation_tables():
        assert len(table()) == expected_keys()[table.__name__] and len(table().jobs.errors) == 0
    assert error_lines() == []


def test_jobs_shows_reservations_by_host_and_pid(ingested):
    import platform

    from pipeline import ephys
    from pipeline.analysis_commands import job_lines
    from pipeline.jobs import job_status

    clear_computed()
    table = ephys.UnitStat()
    table.jobs.refresh()
    key = table.jobs.pending.keys(limit=1)[0]
    assert table.jobs.reserve(key)
    status = job_status(ephys.UnitStat)
    assert status["reserved"] == [{"host": platform.node(), "pid": os.getpid(),
                                   "connection_id": table.connection.connection_id, "key": key}]
    line = [x for x in job_lines() if x.startswith("UnitStat:")][0]
    n = len(ephys.Unit())
    assert line == f"UnitStat: 0 done, {n - 1} pending, 1 reserved (by {platform.node()}/{os.getpid()}), 0 error(s)"
    table.jobs.delete_quick()


def test_docker_compose_worker_service_scales():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    worker_service = services["worker"]
    pipeline_service = services["pipeline"]
    assert worker_service["build"] == pipeline_service["build"]
    assert worker_service.get("image") == pipeline_service.get("image")
    assert worker_service["command"][0] == "automate-computation"
    assert "container_name" not in worker_service and "ports" not in worker_service  # would stop --scale worker=N
    assert worker_service["depends_on"]["db"]["condition"] == "service_healthy"
    assert worker_service["environment"]["DJ_HOST"] == "db"
    assert worker_service.get("restart") == "unless-stopped"

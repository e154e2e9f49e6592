"""Benchmark the computation workers on the bench session (one probe, 400 units, 500 trials).

    DJ_HOST=127.0.0.1 DJ_USER=root /work/venv/bin/python bench/bench_analysis.py [--share DIR] [--keep]

Ingests the bench share (behaviour + ephys) under a schema prefix of its own, then, for
``ephys.UnitStat`` and ``psth.UnitPsth``, measures keys per second of ``populate(reserve_jobs=True)``
with 1 and with 2 worker processes (each a fresh ``python -m pipeline.analysis_commands``-style
child populating that one table; the wall time from a common start signal, given once every
child has imported and connected, to the last child's end; table emptied between runs). In the
same run:

* DataJoint's own per-key overhead: a table keyed like UnitStat (one key per unit) whose
  ``make()`` inserts the key and does nothing else, populated the same way by one worker;
* the work itself: each table's make() body (fetch + numpy + nothing inserted) called directly
  on every key in one process, no job table, no transaction.

Target: 2 workers >= 1.7x one worker; per-key cost of a table <= 2 x (empty-make overhead + work).
Prints the figures, writes bench/results/analysis.json, drops its schemas (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MAP_DB_PREFIX", f"bench_analysis_{os.getpid()}_")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SHARE = Path("/tmp/ephys_bench/share")


def use_share(manifest: dict) -> None:
    from pipeline import config

    config.set_active(config.load_config(check_paths=False).with_settings(
        {"safemode": False, **{f"custom.{key}": value for key, value in manifest["paths"].items()}}, "bench"))


def empty_table():
    """A Computed table keyed like UnitStat whose make() only inserts the key."""
    import datajoint as dj

    from pipeline import db, ephys

    bench = dj.Schema(os.environ["MAP_DB_PREFIX"] + "bench_empty", connection=db.connection())

    @bench
    class EmptyMake(dj.Computed):
        definition = """
        -> ephys.Unit
        """

        def make(self, key):
            self.insert1(key)

    return EmptyMake


def target(name: str):
    from pipeline import ephys, psth

    return {"UnitStat": ephys.UnitStat, "UnitPsth": psth.UnitPsth, "EmptyMake": empty_table()}[name]


def phase_worker(name: str) -> dict:
    """Child: once ready (imported, connected, tables declared), say so and wait for the start
    signal; then populate one table with job reservation until nothing is left. A worker is a
    long-running process, so its start-up is not part of its throughput."""
    from pipeline.jobs import recover_dead_reservations

    table = target(name)()
    len(table.jobs)  # connect and touch the job table before the start line
    start_line = Path(os.environ["BENCH_START_LINE"])
    (start_line.parent / f"ready-{os.getpid()}").touch()
    while not start_line.exists():
        time.sleep(0.001)
    started = time.perf_counter()
    recover_dead_reservations(table)
    made = table.populate(reserve_jobs=True, suppress_errors=True)
    return {"made": made["success_count"], "errors": len(made["error_list"]), "wall_s": time.perf_counter() - started,
            "finished_at": time.time()}


def phase_work(name: str) -> dict:
    """Child: the make() body of a table without DataJoint's populate machinery (nothing inserted)."""
    import numpy as np

    from pipeline import analysis, ephys, psth

    if name == "UnitStat":
        keys = ephys.Unit.keys()
        started = time.perf_counter()
        for key in keys:
            spikes = (ephys.Unit & key).fetch1("spike_times")
            counts, durations = ephys._unit_trials(key)
            analysis.unit_stat(spikes, counts, durations)
    else:
        keys = psth.UnitPsth.key_source.keys()
        started = time.perf_counter()
        for key in keys:
            _, _, go = psth.condition_go_cues(key["trial_condition_name"], key)
            spikes = (ephys.Unit & key).fetch1("spike_times")
            analysis.unit_psth(np.asarray(spikes), go)
    return {"keys": len(keys), "wall_s": time.perf_counter() - started}


def child(phase: str, name: str, share: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--phase", phase, "--table", name, "--share", str(share)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child failed:\n{out[-3000:]}\n{err[-5000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_workers(name: str, n: int, share: Path) -> dict:
    table = target(name)
    table().delete(prompt=False) if len(table()) else None
    table().jobs.delete_quick()
    table().jobs.refresh()  # the queue is filled before the clock starts, for every run alike
    n_keys = len(table().jobs.pending)
    with tempfile.TemporaryDirectory() as signals:
        start_line = Path(signals) / "go"
        os.environ["BENCH_START_LINE"] = str(start_line)
        procs = [child("worker", name, share) for _ in range(n)]
        while len(list(Path(signals).glob("ready-*"))) < n:  # every worker imported and connected
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        go = time.time()
        start_line.touch()
        results = [collect(p) for p in procs]
    wall = max(r["finished_at"] for r in results) - go
    made = sum(r["made"] for r in results)
    if made != n_keys or len(table()) != n_keys or any(r["errors"] for r in results):
        raise SystemExit(f"{name} with {n} workers: {made} made of {n_keys}, errors {[r['errors'] for r in results]}")
    return {"workers": n, "keys": n_keys, "wall_s": round(wall, 3), "keys_per_s": round(n_keys / wall, 1),
            "per_worker_made": [r["made"] for r in results],
            "per_worker_populate_s": [round(r["wall_s"], 3) for r in results]}


def drop_schemas() -> None:
    from pipeline import db

    db.drop_schemas(os.environ["MAP_DB_PREFIX"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--share", type=Path, default=DEFAULT_SHARE)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's schemas")
    parser.add_argument("--phase", choices=("worker", "work"), help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    args = parser.parse_args()
    share = args.share.resolve()
    manifest_path = share / "manifest.json"
    if not manifest_path.exists():
        from ingest.simulator import simulate_share

        print(f"writing the bench share into {share} (about a minute, 3 GB)")
        simulate_share(share, 1, 1, "bench", 0)
    manifest = json.loads(manifest_path.read_text())
    if args.phase:
        use_share(manifest)
        fn = phase_worker if args.phase == "worker" else phase_work
        print(json.dumps(fn(args.table)))
        return 0

    config_file = Path(tempfile.mkstemp(suffix=".json", prefix="bench-analysis-")[1])
    config_file.write_text(json.dumps({"safemode": False, "custom": manifest["paths"]}))
    os.environ["MAP_CONFIG"] = str(config_file)
    use_share(manifest)
    from pipeline import db, ephys, psth  # noqa: F401
    from pipeline.shell import load_schema_modules

    load_schema_modules()
    try:
        from ingest import behavior, share as share_record
        from ingest import ephys as ingest_ephys
        from ingest.runner import run_ingest
        from pipeline.subject_loader import load_subject_file

        load_subject_file(share / "subjects.yaml")
        share_record.scan(["behavior", "ephys"])
        started = time.perf_counter()
        for table in (behavior.BehaviorIngest, ingest_ephys.EphysIngest):
            summary = run_ingest(table, progress=False)
            if summary.failed:
                raise SystemExit(f"{table.__name__} failed: {summary.errors}")
        n_go = len(ephys.TrialEvent & "trial_event_type = 'go'")
        print(f"bench session ingested in {time.perf_counter() - started:.1f} s: {len(ephys.Unit())} units, "
              f"{n_go} go cues; backend {db.backend()}; {os.cpu_count()} CPUs", flush=True)
        results = {"backend": db.backend(), "cpus": os.cpu_count(), "units": len(ephys.Unit()),
                   "conditions": len(psth.TrialCondition())}
        results["empty_make"] = run_workers("EmptyMake", 1, share)
        empty_per_key = results["empty_make"]["wall_s"] / results["empty_make"]["keys"]
        results["empty_make"]["per_key_ms"] = round(empty_per_key * 1000, 3)
        print(f"empty make(): {results['empty_make']['keys_per_s']} keys/s = {empty_per_key * 1000:.2f} ms per key", flush=True)
        for name in ("UnitStat", "UnitPsth"):
            one = run_workers(name, 1, share)
            two = run_workers(name, 2, share)
            work = collect(child("work", name, share))
            work_per_key = work["wall_s"] / work["keys"]
            per_key = one["wall_s"] / one["keys"]
            entry = {"one_worker": one, "two_workers": two,
                     "speedup_2_over_1": round(two["keys_per_s"] / one["keys_per_s"], 2),
                     "per_key_ms": round(per_key * 1000, 3), "work_per_key_ms": round(work_per_key * 1000, 3),
                     "per_key_over_empty_plus_work": round(per_key / (empty_per_key + work_per_key), 2)}
            results[name] = entry
            print(f"{name}: 1 worker {one['keys_per_s']} keys/s, 2 workers {two['keys_per_s']} keys/s "
                  f"(x{entry['speedup_2_over_1']}); per key {entry['per_key_ms']} ms vs empty make "
                  f"{empty_per_key * 1000:.2f} ms + work {entry['work_per_key_ms']} ms "
                  f"(x{entry['per_key_over_empty_plus_work']})", flush=True)
        print(json.dumps(results, indent=2))
        out = ROOT / "bench" / "results" / "analysis.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {out}")
    finally:
        config_file.unlink(missing_ok=True)
        if not args.keep:
            drop_schemas()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the ephys ingest on the bench session (one NP1.0 probe, 400 units, ~20 M spikes, 500 trials).

    DJ_HOST=127.0.0.1 DJ_USER=root /work/venv/bin/python bench/bench_ephys.py [--share DIR] [--keep]

Writes the bench share with the simulator unless DIR already holds one (manifest of scale
'bench'), loads its subject and behaviour, then times, each in a fresh child process (wall time
and peak RSS of the child; the spike arrays are memory-mapped .npy files, whose touched pages
count in RSS):

* ingest: ``EphysIngest`` populate of the session (read, match, units, per-trial slices, metrics);
* floor: ``np.load`` of the same .npy files plus writing the same number of bytes the ingest
  stored, in one transaction, with as few multi-row INSERTs through the driver as the server's
  max_allowed_packet allows (MariaDB's default 16 MB: one statement cannot hold 170 MB);
* MAP's layout: one ``TrialSpikes`` row (blob of the trial's spikes relative to the go cue) per
  unit x trial, inserted with DataJoint in chunks of 10,000.

Then a PSTH over every unit of the session (spike counts in 10 ms bins, -3 .. 2 s around the go
cue): from ``Unit.spike_times`` + the go cues (this layout), from MAP's per-trial rows, and
through ``Unit.TrialSpikes``'s ``spike_times`` (cut from the unit arrays on fetch).

Prints the figures and writes bench/results/ephys.json. Uses its own schema prefix and drops its
schemas at the end (unless --keep).
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

os.environ.setdefault("MAP_DB_PREFIX", f"bench_ephys_{os.getpid()}_")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import peak_rss_mb, rss_mb  # noqa: E402

WINDOW = (-3.0, 2.0)
MAP_STATEMENT_ROWS = 2_000  # 10,000 rows of ~800-byte blobs exceed MariaDB's default 16 MB packet
BIN = 0.01
NPY = ("spike_times.npy", "spike_clusters.npy", "spike_templates.npy", "amplitudes.npy", "templates.npy",
       "channel_map.npy", "channel_positions.npy", "mean_waveforms.npy")


def use_share(manifest: dict) -> None:
    from pipeline import config

    config.set_active(config.load_config(check_paths=False).with_settings(
        {"safemode": False, **{f"custom.{key}": value for key, value in manifest["paths"].items()}}, "bench"))


def child(phase: str, share: Path) -> dict:
    """Run one phase in a fresh interpreter; returns its JSON result plus its own peak RSS
    (the child's VmHWM: getrusage's figure for children is a maximum over all of them)."""
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--share", str(share)],
                         capture_output=True, text=True, env=os.environ.copy())
    if out.returncode:
        raise SystemExit(f"phase {phase} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _session(manifest) -> tuple[dict, dict, dict]:
    s = manifest["sessions"][0]
    return s, s["ephys"]["probes"][0], {"subject_id": s["subject_id"], "session": s["session_number"]}


# --- phases run in child processes ------------------------------------------------------------

def phase_ingest(share: Path, manifest: dict) -> dict:
    from ingest import ephys as ingest_ephys
    from ingest.runner import run_ingest
    from pipeline import ephys

    ingest_ephys.EphysIngest()  # import and connect before the clock starts
    base = rss_mb()
    started = time.perf_counter()
    summary = run_ingest(ingest_ephys.EphysIngest, progress=False)
    wall = time.perf_counter() - started
    if summary.failed or summary.inserted != 1:
        raise SystemExit(f"ingest failed: {summary.errors}")
    _, _, key = _session(manifest)
    stored = stored_bytes(key)
    return {"wall_s": round(wall, 2), "rss_before_mb": round(base, 1), "stored": stored,
            "units": len(ephys.Unit & key), "trial_spike_rows": len(ephys.Unit.TrialSpikes & key)}


def stored_bytes(key: dict) -> dict:
    from pipeline import ephys

    conn = ephys.Unit.connection
    length = "OCTET_LENGTH"
    where = f"subject_id = {int(key['subject_id'])} AND session = {int(key['session'])}"
    blobs = conn.query(f"SELECT SUM({length}(spike_times)), SUM({length}(spike_sites)), SUM({length}(spike_depths)), "
                       f"SUM({length}(waveform)) FROM {ephys.Unit.full_table_name} WHERE {where}").fetchone()
    rows = len(ephys.Unit.TrialSpikes & key)
    row_bytes = 4 + 2 + 2 + len("kilosort2") + 4 + 2 + 4 + 4 + 8
    return {"unit_blob_bytes": int(sum(int(b) for b in blobs)), "spike_times_bytes": int(blobs[0]),
            "trial_rows_bytes": rows * row_bytes, "trial_event_rows": len(ephys.TrialEvent & key)}


def phase_floor(share: Path, manifest: dict) -> dict:
    from pipeline import db, ephys

    _, p, key = _session(manifest)
    folder = share / p["sorting"]
    target = json.loads(os.environ["BENCH_TARGET_BYTES"])
    conn = ephys.Unit.connection
    table = f"{ephys.schema.database}"
    quote = conn.adapter.quote_identifier
    name = f"{quote(table)}.{quote('floor_bytes')}"
    conn.query(f"DROP TABLE IF EXISTS {name}")
    conn.query(f"CREATE TABLE {name} (id int PRIMARY KEY, data {'bytea' if db.backend() == 'postgresql' else 'longblob'})")
    base = rss_mb()
    started = time.perf_counter()
    arrays = {n: np.load(folder / n) for n in NPY}
    read_s = time.perf_counter() - started
    # the bytes the ingest stores are mostly float64 spike times in seconds
    data = (arrays["spike_times.npy"] / float(manifest["sessions"][0]["ephys"]["sample_rate"])).tobytes()
    while len(data) < target:
        data += data
    data = memoryview(data)[:target]
    cursor = conn._conn.cursor()
    chunk = 6 << 20 if db.backend() != "postgresql" else target
    statements = 0
    with conn.transaction:
        rows = [bytes(data[i:i + chunk]) for i in range(0, target, chunk)]
        per = 1 if db.backend() != "postgresql" else len(rows)
        for start in range(0, len(rows), per):
            batch = rows[start:start + per]
            cursor.execute(f"INSERT INTO {name} (id, data) VALUES " + ", ".join(["(%s, %s)"] * len(batch)),
                           [v for i, b in enumerate(batch, start) for v in (i, b)])
            statements += 1
    wall = time.perf_counter() - started
    conn.query(f"DROP TABLE IF EXISTS {name}")
    return {"wall_s": round(wall, 2), "read_npy_s": round(read_s, 2), "bytes": target, "statements": statements,
            "rss_before_mb": round(base, 1)}


def phase_map_layout(share: Path, manifest: dict) -> dict:
    """MAP's TrialSpikes: one blob row per unit x trial, DataJoint insert in chunks of 10,000."""
    import datajoint as dj

    from pipeline import db, ephys, experiment

    _, _, key = _session(manifest)
    bench = dj.Schema(os.environ["MAP_DB_PREFIX"] + "bench_map", connection=db.connection())

    @bench
    class MapTrialSpikes(dj.Manual):
        definition = """
        -> ephys.Unit
        -> experiment.SessionTrial
        ---
        spike_times : <blob>   # (s) relative to the go cue
        """

    rows_source = (ephys.Unit.TrialSpikes & key)
    started = time.perf_counter()
    rows = rows_source.to_dicts()  # spike_times cut from the unit arrays
    build_s = time.perf_counter() - started
    for r in rows:
        for k in ("spike_start", "spike_count", "go_cue_time"):
            r.pop(k)
    started = time.perf_counter()
    for i in range(0, len(rows), 10_000):  # MAP's chunks; DataJoint splits each into statements
        MapTrialSpikes.insert(rows[i:i + 10_000], chunk_size=MAP_STATEMENT_ROWS)  # under max_allowed_packet
    insert_s = time.perf_counter() - started
    del rows
    # PSTH from MAP's layout
    started = time.perf_counter()
    keys, times = (MapTrialSpikes & key).to_arrays("spike_times", include_key=True)
    fetch_s = time.perf_counter() - started
    edges = np.arange(round((WINDOW[1] - WINDOW[0]) / BIN) + 1) * BIN + WINDOW[0]
    units = sorted({(k["insertion_number"], k["clustering_method"], k["unit"]) for k in keys})
    index = {u: i for i, u in enumerate(units)}
    counts = np.zeros((len(units), len(edges) - 1), np.int64)
    for k, t in zip(keys, times):
        counts[index[(k["insertion_number"], k["clustering_method"], k["unit"])]] += np.histogram(np.asarray(t).ravel(), edges)[0]
    psth_s = time.perf_counter() - started
    n = len(MapTrialSpikes & key)
    bench.drop(prompt=False)
    return {"rows": n, "rows_per_statement": MAP_STATEMENT_ROWS, "build_rows_s": round(build_s, 2), "insert_s": round(insert_s, 2),
            "psth_fetch_s": round(fetch_s, 2), "psth_total_s": round(psth_s, 2), "psth_spikes": int(counts.sum())}


def phase_psth(share: Path, manifest: dict) -> dict:
    from pipeline import ephys

    _, _, key = _session(manifest)
    started = time.perf_counter()
    keys, edges, counts, n_trials = ephys.session_psth(key, window=WINDOW, bin_s=BIN)
    psth_s = time.perf_counter() - started
    started = time.perf_counter()
    trial_keys, trial_times = (ephys.Unit.TrialSpikes & key).to_arrays("spike_times", include_key=True)
    trial_fetch_s = time.perf_counter() - started
    return {"psth_s": round(psth_s, 2), "units": len(keys), "trials": n_trials, "bins": counts.shape[1],
            "psth_spikes": int(counts.sum()), "trialspikes_rows": len(trial_keys),
            "trialspikes_fetch_s": round(trial_fetch_s, 2)}


PHASES = {"ingest": phase_ingest, "floor": phase_floor, "map": phase_map_layout, "psth": phase_psth}


# --- orchestration ------------------------------------------------------------------------------

def prepare(share: Path) -> dict:
    manifest_path = share / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("scale") == "bench":
            return manifest
    from ingest.simulator import simulate_share

    print(f"writing the bench share into {share} (about a minute, 3 GB)")
    return simulate_share(share, subjects=1, sessions=1, scale="bench")


def drop_schemas() -> None:
    from pipeline import db

    db.drop_schemas(os.environ["MAP_DB_PREFIX"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--share", type=Path, default=Path(tempfile.gettempdir()) / "map-bench-ephys-share")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's schemas")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    share = args.share.resolve()
    if args.phase:
        manifest = json.loads((share / "manifest.json").read_text())
        use_share(manifest)
        print(json.dumps({**PHASES[args.phase](share, manifest), "child_maxrss_mb": round(peak_rss_mb(), 1)}))
        return 0

    manifest = prepare(share)
    config_file = Path(tempfile.mkstemp(suffix=".json", prefix="bench-ephys-")[1])
    config_file.write_text(json.dumps({"safemode": False, "custom": manifest["paths"]}))
    os.environ["MAP_CONFIG"] = str(config_file)
    use_share(manifest)
    from pipeline import db
    from pipeline.shell import load_schema_modules

    load_schema_modules()
    try:
        from ingest import behavior, share as share_record
        from ingest import ephys as ingest_ephys  # noqa: F401  (declares the ingest schema)
        from ingest.runner import run_ingest
        from pipeline.subject_loader import load_subject_file

        load_subject_file(share / "subjects.yaml")
        started = time.perf_counter()
        share_record.scan(["behavior", "ephys"])
        scan_s = time.perf_counter() - started
        behaviour = run_ingest(behavior.BehaviorIngest, progress=False)
        if behaviour.failed:
            raise SystemExit(f"behaviour ingest failed: {behaviour.errors}")
        s, p, _ = _session(manifest)
        folder = share / p["sorting"]
        n_spikes = int(np.load(folder / "spike_times.npy", mmap_mode="r").shape[0])
        spike_array_bytes = sum((folder / n).stat().st_size for n in ("spike_times.npy", "spike_clusters.npy",
                                                                       "spike_templates.npy", "amplitudes.npy"))
        print(f"bench session: {len(p['units'])} units, {n_spikes:,} spikes, {s['n_trials']} trials "
              f"({s['n_trials_ingestable']} ingestable); per-spike .npy arrays {spike_array_bytes / 2**20:.0f} MB; "
              f"backend {db.backend()}")
        ingest = child("ingest", share)
        target = ingest["stored"]["unit_blob_bytes"] + ingest["stored"]["trial_rows_bytes"]
        os.environ["BENCH_TARGET_BYTES"] = json.dumps(target)
        floor = child("floor", share)
        psth = child("psth", share)
        map_layout = child("map", share)
        results = {
            "backend": db.backend(), "units": len(p["units"]), "spikes": n_spikes, "trials": s["n_trials"],
            "ingestable_trials": s["n_trials_ingestable"], "spike_arrays_mb": round(spike_array_bytes / 2**20, 1),
            "scan_s": round(scan_s, 2),
            "ingest": ingest, "floor": floor,
            "ingest_over_floor": round(ingest["wall_s"] / floor["wall_s"], 2),
            "ingest_peak_rss_over_spike_arrays": round(ingest["child_maxrss_mb"] / (spike_array_bytes / 2**20), 2),
            "ingest_rss_rise_over_spike_arrays": round((ingest["child_maxrss_mb"] - ingest["rss_before_mb"])
                                                       / (spike_array_bytes / 2**20), 2),
            "psth": psth, "map_layout": map_layout,
        }
        print(json.dumps(results, indent=2))
        print(f"\ningest {ingest['wall_s']} s vs floor {floor['wall_s']} s (x{results['ingest_over_floor']}); "
              f"peak RSS {ingest['child_maxrss_mb']} MB = x{results['ingest_peak_rss_over_spike_arrays']} the spike "
              f"arrays ({results['spike_arrays_mb']} MB); PSTH over {psth['units']} units in {psth['psth_s']} s; "
              f"MAP layout: {map_layout['rows']} rows inserted in {map_layout['insert_s']} s, its PSTH "
              f"{map_layout['psth_total_s']} s")
        out = ROOT / "bench" / "results" / "ephys.json"
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

"""What every benchmark shares: the bench share (simulated once, reused), a schema prefix of the
run's own that is dropped at the end, peak-memory readings, and the results file.

Import this before any pipeline module: it sets the run's schema prefix.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import sys
import time
from pathlib import Path

PREFIX = os.environ.setdefault("MAP_DB_PREFIX", f"bench{secrets.token_hex(3)}_")
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_dir() -> Path:
    """Where the bench share lives: $MAP_BENCH_DIR, else the user's cache directory."""
    return Path(os.environ.get("MAP_BENCH_DIR", Path.home() / ".cache" / "map-pipeline" / "bench"))


def bench_share() -> tuple[Path, dict]:
    """The bench-scale share (one long Neuropixels session and 74,000 small files), made once."""
    from ingest.simulator import simulate_share

    root = bench_dir() / "share"
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("scale") == "bench" and manifest.get("seed") == 0:
            return root, manifest
    started = time.perf_counter()
    print(f"writing the bench share to {root} (about a minute, 3 GB) ...", flush=True)
    manifest = simulate_share(root, subjects=1, sessions=1, scale="bench", seed=0)
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return root, manifest


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, from /proc's VmHWM (unlike getrusage's
    ru_maxrss it is not inherited from the parent across fork and exec)."""
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS)."""
    return _proc_status_mb("VmRSS") or 0.0


def drop_run_schemas() -> None:
    from pipeline import db

    db.drop_schemas(PREFIX)


def backend_label() -> str:
    from pipeline import config, db

    db.connection()
    return f"{db.backend()} ({'server ' + str(config.active().get('database.host')) if config.active().host_configured else 'embedded'})"


def write_results(name: str, figures: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"results written to {path}")
    return path

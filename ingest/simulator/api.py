"""Public entry points: simulate_share, write_broken_catalogue, main (the CLI)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import broken, manifest
from .benchfiles import write_bench_files
from .model import DEFAULT_SIZE, SCALES, build_plan
from .share import render


def simulate_share(root: Path, subjects: int = 2, sessions: int = 2, scale: str = "tiny",
                   seed: int = 0) -> dict:
    """Write a complete delay-task lab share under root; return (and write) the manifest.

    Same seed -> same file bytes. `sessions` is per subject."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    root = Path(root)
    plan = build_plan(subjects, sessions, scale, seed)
    entries, ccf_entry = render(root, plan)
    extra = {}
    if plan.scale.bench_files:
        extra["bench_files"] = write_bench_files(root, plan.scale.bench_files, seed)
    return manifest.build(root, plan, entries, ccf_entry, extra)


def write_broken_catalogue(root: Path, seed: int = 0) -> list[dict]:
    """Write a tiny share of good sessions plus, per broken case, a session of subject
    `br90` with exactly one broken input; return the cases (also manifest['broken'])."""
    root = Path(root)
    plan = build_plan(2, 2, "tiny", seed)
    bplan = broken.broken_plan(seed)
    plan.subjects += bplan.subjects
    entries, ccf_entry = render(root, plan)
    b_entries, _ = render(root, bplan, common=False)
    cases = broken.apply(root, bplan.sessions, seed)
    by_session = {c["session"].get("behavior_file"): c["case"] for c in cases}
    for e in b_entries:
        e["broken_case"] = by_session.get(e["behavior_file"])
    manifest.build(root, plan, entries + b_entries, ccf_entry, {"broken": cases})
    return cases


def main(argv: list[str] | None = None) -> int:
    """`python -m ingest.simulator DIR [--subjects N] [--sessions M] [--scale S] [--seed S]
    [--broken]`; subjects/sessions default to the scale's size (tiny 2x2, small 3x3, bench 1x1)."""
    ap = argparse.ArgumentParser(prog="python -m ingest.simulator",
                                 description="Write a simulated MAP rig share.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--subjects", type=int)
    ap.add_argument("--sessions", type=int)
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--broken", action="store_true",
                    help="write the broken-input catalogue (tiny scale) instead")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.broken:
        cases = write_broken_catalogue(a.root, a.seed)
        print(json.dumps({"root": str(a.root), "broken_cases": len(cases),
                          "seconds": round(time.perf_counter() - t0, 2)}))
        return 0
    ns, nm = DEFAULT_SIZE[a.scale]
    m = simulate_share(a.root, a.subjects or ns, a.sessions or nm, a.scale, a.seed)
    print(json.dumps({"root": str(a.root), "scale": a.scale, "sessions": len(m["sessions"]),
                      "files": len(m["files"]),
                      "bytes": sum(f["size"] for f in m["files"].values()),
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0

"""``mapshell simulate-share`` and ``mapshell demo``: the pipeline end to end on a simulated lab.

The demo writes a small simulated share, loads its subjects and runs every stage the pipeline
has, into schemas of its own (prefix ``map_demo_``), so it never mixes simulated animals into a
lab's real data. Each stage registers itself in :data:`DEMO_STAGES`; the demo runs them in order.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import config as _config
from .shell import command

DEMO_PREFIX = "map_demo_"


@dataclass
class DemoContext:
    share: Path
    manifest: dict
    config: _config.PipelineConfig
    notes: list[str] = field(default_factory=list)


@dataclass
class Stage:
    name: str
    run: Callable[[DemoContext], str]
    order: int = 50


# Stages after simulation; each module registers its own, and the demo runs them by `order`:
# 10 reference data (CCF), 20 ingest, 40 publication, 60 analysis.
DEMO_STAGES: list[Stage] = []


def demo_stage(name: str, order: int):
    def register(fn: Callable[[DemoContext], str]):
        DEMO_STAGES.append(Stage(name, fn, order))
        return fn

    return register


def _configure_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="folder to write the share into")
    parser.add_argument("--subjects", type=int, help="subjects (default: the scale's own)")
    parser.add_argument("--sessions", type=int, help="sessions per subject (default: the scale's own)")
    parser.add_argument("--scale", choices=("tiny", "small", "bench"), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--broken", action="store_true", help="write the catalogue of broken inputs instead")


@command("simulate-share", "write a simulated rig share (Bpod, SpikeGLX/CatGT, Kilosort, DLC, video, histology, CCF) and its manifest",
         _configure_simulate)
def _simulate_share(args: argparse.Namespace) -> int:
    from ingest.simulator import main as simulate_main

    argv = [str(args.dir), "--scale", args.scale, "--seed", str(args.seed)]
    argv += ["--subjects", str(args.subjects)] if args.subjects else []
    argv += ["--sessions", str(args.sessions)] if args.sessions else []
    argv += ["--broken"] if args.broken else []
    return simulate_main(argv)


def demo_config(base: _config.PipelineConfig, manifest: dict, prefix: str) -> _config.PipelineConfig:
    """The user's database settings with the simulated share's paths and the demo's prefix."""
    return base.with_custom({**manifest["paths"], "database.prefix": prefix}, "demo")


def simulate_or_reuse(share: Path, scale: str, seed: int) -> tuple[dict, bool]:
    """The share's manifest; an existing share of the same scale and seed is reused."""
    from ingest.simulator import simulate_share

    manifest_path = share / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("scale") == scale and manifest.get("seed") == seed:
            return manifest, True
    from ingest.simulator.model import DEFAULT_SIZE

    subjects, sessions = DEFAULT_SIZE[scale]
    return simulate_share(share, subjects, sessions, scale, seed), False


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, nargs="?", default=Path("map-demo"), help="where the simulated share goes (default ./map-demo)")
    parser.add_argument("--scale", choices=("tiny", "small"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default=DEMO_PREFIX, help=f"schema prefix for the demo's tables (default {DEMO_PREFIX})")


@command("demo", "simulate a small lab share and run every pipeline stage on it, with a summary", _configure_demo)
def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    share = args.dir.resolve()
    started = time.perf_counter()
    with tqdm(total=1, desc="simulate share", unit="share", leave=True) as bar:
        manifest, reused = simulate_or_reuse(share, args.scale, args.seed)
        bar.update(1)
    print(("reused" if reused else "wrote") + f" {len(manifest['files'])} files of {len(manifest['sessions'])} sessions in {share}")
    cfg = demo_config(_config.active(), manifest, args.prefix)
    _config.set_active(cfg)
    (share / "dj_local_conf.json").write_text(json.dumps(
        {"custom": {"database.prefix": args.prefix, **manifest["paths"]}}, indent=2) + "\n")
    from .shell import load_schema_modules

    if demo_schemas_hold_another_share(cfg, share):
        from . import db

        db.drop_schemas(args.prefix)
        print(f"the {args.prefix}* schemas held another demo share: dropped them, starting afresh")
    load_schema_modules()  # every schema exists, even where a stage has nothing to put in it yet
    context = DemoContext(share, manifest, cfg)
    lines = []
    for stage in [Stage("load subjects", _load_subjects, 0), *sorted(DEMO_STAGES, key=lambda st: st.order)]:
        with tqdm(total=1, desc=stage.name, leave=True) as bar:
            lines.append(f"{stage.name}: {stage.run(context)}")
            bar.update(1)
    print("\n".join(["", "== summary", *lines, *context.notes]))
    from .status import database_status

    print("\n".join(line for line in database_status(cfg) if not line.endswith(" 0 rows")))
    print(f"\nshare: {share}\nconfig for exploring it: {share / 'dj_local_conf.json'} (cd there and run `mapshell shell`)")
    print(f"demo took {time.perf_counter() - started:.1f} s")
    return 0


def demo_schemas_hold_another_share(cfg: _config.PipelineConfig, share: Path) -> bool:
    """Do the demo's schemas record files of a share other than this one (an earlier demo
    elsewhere)? Mixing two simulated labs would make every later stage wrong."""
    import datajoint as dj

    from . import db

    conn = db.connection(cfg)
    schema = cfg.schema_name("ingest_share")
    if schema not in dj.list_schemas(connection=conn):
        return False
    quote = conn.adapter.quote_identifier
    try:
        roots = [Path(r[0]) for r in conn.query(f"SELECT root_path FROM {quote(schema)}.{quote('share_root')}").fetchall()]
    except Exception:  # the schema exists without the table: nothing recorded yet
        return False
    return any(not root.is_relative_to(share) for root in roots)


def _load_subjects(context: DemoContext) -> str:
    from .subject_loader import load_subject_file

    result = load_subject_file(context.share / "subjects.yaml")
    return f"{result.total} rows inserted" + (" (already loaded)" if result.total == 0 else "")

"""mapshell commands of the analysis layer: automate-computation and jobs.

Importing this module registers the commands and a demo stage and does not connect to a
database; the schema modules are imported when a command runs. Wire it by adding
``"pipeline.analysis_commands"`` to ``pipeline.shell.PLUGIN_MODULES``.

Workers are DataJoint's own job reservation (``populate(reserve_jobs=True)``): any number of
``automate-computation`` processes, on any machines sharing the database server, each loop over
:func:`computation_tables` in dependency order; the job tables hand each key to one of them.
``--workers N`` starts N worker processes (``python -m pipeline.analysis_commands``) and waits.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys

from .shell import command

# In dependency order (key sources included: UnitPassingCriteria needs UnitStat and
# MAPClusterMetric, UnitSelectivity needs every PeriodSelectivity of its unit).
COMPUTATION_TABLES = (
    "pipeline.ephys:UnitStat",
    "pipeline.ephys:UnitCellType",
    "pipeline.ephys:MAPClusterMetric",
    "pipeline.ephys:UnitPassingCriteria",
    "pipeline.psth:UnitPsth",
    "pipeline.psth:PeriodSelectivity",
    "pipeline.psth:UnitSelectivity",
    "pipeline.tracking:TrackingQC",
)


def computation_tables() -> list:
    """The computed tables automate-computation populates, in dependency order (imports them)."""
    tables = []
    for entry in COMPUTATION_TABLES:
        module, name = entry.split(":")
        tables.append(getattr(importlib.import_module(module), name))
    return tables


def _say(line: str) -> None:
    print(f"[worker {os.getpid()}] {line}", flush=True)


def run_worker(*, once: bool, sleep_s: float, max_rounds: int | None = None) -> int:
    """One worker in this process: rounds over the computed tables (see pipeline.jobs.work)."""
    from .jobs import work

    rounds = work(computation_tables, once=once, sleep_s=sleep_s, max_rounds=max_rounds, log=_say)
    made = sum(sum(r.made.values()) for r in rounds)
    failed = sum(sum(len(v) for v in r.failed.values()) for r in rounds)
    _say(f"done: {made} key(s) made, {failed} error(s), {len(rounds)} round(s)")
    return 0


def worker_command(*, once: bool, sleep_s: float, config_path=None) -> list[str]:
    """The command line of one worker process."""
    cmd = [sys.executable, "-m", "pipeline.analysis_commands", "--sleep", str(sleep_s)]
    if once:
        cmd.append("--once")
    if config_path:
        cmd += ["--config", str(config_path)]
    return cmd


def run_workers(n: int, *, once: bool, sleep_s: float) -> int:
    """Start ``n`` worker processes and wait for them; SIGINT/SIGTERM are passed on to them."""
    from . import config

    cfg = config.active()
    procs = [subprocess.Popen(worker_command(once=once, sleep_s=sleep_s, config_path=cfg.path), env=os.environ.copy())
             for _ in range(n)]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return max((c for c in codes if c > 0), default=0) or (0 if all(c == 0 for c in codes) else 1)


def _configure_automate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start on this machine (default 1)")
    parser.add_argument("--once", action="store_true", help="stop when a round finds nothing left to do")
    parser.add_argument("--sleep", type=float, default=30.0, help="seconds to sleep after an idle round (default 30)")


@command("automate-computation", "populate every computed table in dependency order with job reservation "
                                 "(any number of these processes share the work)", _configure_automate)
def _automate(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise SystemExit("mapshell automate-computation: --workers must be at least 1")
    if args.workers == 1:
        return run_worker(once=args.once, sleep_s=args.sleep)
    return run_workers(args.workers, once=args.once, sleep_s=args.sleep)


def job_lines() -> list[str]:
    """Per table: done, pending, reserved (by which host/pid), errors."""
    from ingest.commands import ingest_tables

    from .jobs import job_status

    lines = []
    for table in [*ingest_tables(), *computation_tables()]:
        status = job_status(table)
        holders = ", ".join(sorted({f"{r['host']}/{r['pid']}" for r in status["reserved"]}))
        lines.append(f"{status['table']}: {status['done']} done, {status['pending']} pending, "
                     f"{len(status['reserved'])} reserved" + (f" (by {holders})" if holders else "")
                     + f", {status['error']} error(s)")
    return lines


@command("jobs", "per computed and ingest table: done, pending, reserved (by which host/pid), errors")
def _jobs(args: argparse.Namespace) -> int:
    print("\n".join(job_lines()))
    return 0


def _demo_compute(context) -> str:
    """Demo stage: one worker in this process computes every analysis table."""
    from .jobs import work

    rounds = work(computation_tables, once=True, sleep_s=0, log=context.notes.append)
    made = sum(sum(r.made.values()) for r in rounds)
    failed = sum(sum(len(v) for v in r.failed.values()) for r in rounds)
    return f"{made} key(s) computed in {len(rounds)} round(s); {failed} error(s)" + (" (see `mapshell errors`)" if failed else "")


def _register_demo_stage() -> None:
    from .demo import demo_stage

    demo_stage("compute", order=60)(_demo_compute)


_register_demo_stage()


def main(argv=None) -> int:
    """A worker process: ``python -m pipeline.analysis_commands [--once] [--sleep S] [--config FILE]``."""
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m pipeline.analysis_commands", description="one computation worker")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--sleep", type=float, default=30.0)
    parser.add_argument("--max-rounds", type=int)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    from . import config

    if args.config:
        config.set_active(config.load_config(args.config, check_paths=False))
    return run_worker(once=args.once, sleep_s=args.sleep, max_rounds=args.max_rounds)


if __name__ == "__main__":
    sys.exit(main())

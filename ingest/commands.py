"""mapshell commands of the ingest layer: scan, ingest-<stage>, ingest-all, errors.

Importing this module does not connect to the database; each command imports the ingest
schemas it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

from pipeline.shell import command


@dataclass(frozen=True)
class IngestStage:
    name: str                 # ingest-<name>
    kinds: tuple[str, ...]    # share kinds its keys come from
    table: str                # "module:Class" of the ingest table
    help: str
    report: str | None = None  # "module:function" returning extra summary lines

    def load_table(self):
        module, name = self.table.split(":")
        return getattr(importlib.import_module(module), name)

    def extra_lines(self) -> list[str]:
        if not self.report:
            return []
        module, name = self.report.split(":")
        return getattr(importlib.import_module(module), name)()


# In pipeline order: ingest-all runs them in this order.
INGEST_STAGES: list[IngestStage] = [
    IngestStage("behavior", ("behavior",), "ingest.behavior:BehaviorIngest",
                "load Bpod sessions and trials from the behaviour shares", "ingest.behavior:unregistered_report"),
    IngestStage("ephys", ("ephys",), "ingest.ephys:EphysIngest", "load CatGT recordings and their Kilosort/JRCLUST sortings for ingested sessions", "ingest.ephys:ingest_report"),
    IngestStage("tracking", ("tracking",), "ingest.tracking:TrackingIngest",
                "load DeepLabCut tracking for ingested sessions"),
    IngestStage("histology", ("histology",), "ingest.histology:HistologyIngest", "load electrode positions and probe tracks (IBL alignment GUI, MAP landmarks) for ingested probe insertions; needs a loaded CCF", "ingest.histology:histology_report"),
]


def ingest_tables() -> list:
    return [stage.load_table() for stage in INGEST_STAGES]


def _scan_lines(kinds) -> list[str]:
    from pipeline import config

    from . import share

    config.load_config(config.active().path, check_paths=True)  # one clear message for a missing share
    ingest_tables()  # importing the stages registers their scan hooks (files -> ingest keys)
    lines = []
    for report in share.scan(kinds):
        line = (f"scan {report.data_kind} {report.root}: {report.present} files ({len(report.new)} new, "
                f"{len(report.changed)} changed, {len(report.vanished)} vanished) in {report.seconds:.2f} s")
        lines.append(line)
        lines += [f"  vanished: {rel}" for rel in report.vanished[:20]]
        lines += [f"  problem: {rel}: {why}" for rel, why in report.problems]
    return lines


def run_stage(stage: IngestStage, *, scan: bool = True, progress: bool = True) -> list[str]:
    from .runner import run_ingest

    lines = _scan_lines(stage.kinds) if scan else []
    summary = run_ingest(stage.load_table(), progress=progress)
    lines.append(summary.line())
    lines += [f"  error: {message}" for message in summary.errors]
    lines += stage.extra_lines()
    return lines


def _configure_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-scan", action="store_true", help="use the share record as it is; do not rescan first")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _configure_ephys(parser: argparse.ArgumentParser) -> None:
    _configure_ingest(parser)
    parser.add_argument("--replace", action="store_true",
                        help="archive the loaded clusterings of recordings whose files changed on the share, and load the new ones")


def _stage_command(stage: IngestStage) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        lines = []
        if getattr(args, "replace", False):
            from ingest.ephys import request_replace

            lines += _scan_lines(stage.kinds) if not args.no_scan else []
            lines += request_replace()
            lines += run_stage(stage, scan=False, progress=not args.quiet)
        else:
            lines += run_stage(stage, scan=not args.no_scan, progress=not args.quiet)
        print("\n".join(lines))
        return 0

    return run


for _stage in INGEST_STAGES:
    command(f"ingest-{_stage.name}", _stage.help, _configure_ephys if _stage.name == "ephys" else _configure_ingest)(
        _stage_command(_stage))


@command("ingest-all", "scan the shares and run every ingest stage, in order", _configure_ingest)
def _ingest_all(args: argparse.Namespace) -> int:
    kinds = tuple(dict.fromkeys(kind for stage in INGEST_STAGES for kind in stage.kinds))
    lines = [] if args.no_scan else _scan_lines(kinds)
    for stage in INGEST_STAGES:
        lines += run_stage(stage, scan=False, progress=not args.quiet)
    print("\n".join(lines))
    return 0


def _configure_scan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kinds", nargs="*", help="share kinds to scan (default: all configured)")


@command("scan", "record what the configured shares hold (new, changed, vanished files); no ingest", _configure_scan)
def _scan(args: argparse.Namespace) -> int:
    from .share import DATA_KINDS

    unknown = [k for k in args.kinds if k not in DATA_KINDS]
    if unknown:
        raise SystemExit(f"mapshell scan: unknown kind(s) {unknown}; choose from {sorted(DATA_KINDS)}")
    print("\n".join(_scan_lines(args.kinds or list(DATA_KINDS))))
    return 0


def _configure_errors(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry", action="store_true", help="forget the recorded errors so the next run tries those keys again")


def error_lines() -> list[str]:
    """What failed, why, which file: unreadable share paths and failed ingest keys."""
    from pipeline.analysis_commands import computation_tables
    from pipeline.jobs import job_errors

    from . import share

    lines = []
    for row in (share.ShareRoot * share.ScanProblem).to_dicts():
        lines.append(f"scan {row['data_kind']} {row['root_path']}/{row['relpath']}: {row['problem']}")
    for error in job_errors([*ingest_tables(), *computation_tables()]):
        key = ", ".join(f"{k}={v}" for k, v in error.key.items())
        lines.append(f"{error.table} [{key}] at {error.when}: {error.message}" + (f"\n    {error.where}" if error.where else ""))
    return lines


@command("errors", "list what failed during scans and ingest: which file and why", _configure_errors)
def _errors(args: argparse.Namespace) -> int:
    from pipeline.analysis_commands import computation_tables
    from pipeline.jobs import clear_errors

    lines = error_lines()
    print("\n".join(lines) if lines else "no errors recorded")
    if args.retry:
        cleared = sum(clear_errors(table) for table in [*ingest_tables(), *computation_tables()])
        print(f"cleared {cleared} error(s); the next ingest or automate-computation tries them again")
    return 0


def _demo_ingest(context) -> str:
    """Demo stage: scan the simulated share and run every ingest stage."""
    kinds = tuple(dict.fromkeys(kind for stage in INGEST_STAGES for kind in stage.kinds))
    lines = _scan_lines(kinds)
    for stage in INGEST_STAGES:
        lines += run_stage(stage, scan=False, progress=True)
    context.notes.extend(lines)
    errors = error_lines()
    return f"{len(INGEST_STAGES)} stages run; {len(errors)} error(s) recorded" + (" (see `mapshell errors`)" if errors else "")


def _register_demo_stage() -> None:
    from pipeline.demo import demo_stage

    demo_stage("ingest", order=20)(_demo_ingest)


_register_demo_stage()

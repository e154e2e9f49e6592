"""``mapshell``: the pipeline's command line, as MAP's ``mapshell.py``.

Each command is a small function registered with :func:`command`; later stages add theirs to
the same registry. Expected failures (bad config, bad input files, an unreachable server) end
with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

SCHEMA_MODULES = ("lab", "experiment", "ccf", "ephys", "histology", "tracking", "psth", "publication")


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``run(args)`` as ``mapshell <name>``."""

    def register(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register


def _expected_errors() -> tuple[type[BaseException], ...]:
    from datajoint.errors import DataJointError

    from .config import ConfigError
    from .embedded import EmbeddedServerError
    from .subject_loader import SubjectFileError

    errors: list[type[BaseException]] = [ConfigError, EmbeddedServerError, SubjectFileError, DataJointError, OSError]
    try:
        import pymysql

        errors.append(pymysql.err.OperationalError)
    except ImportError:
        pass
    try:
        import psycopg2

        errors.append(psycopg2.OperationalError)
    except ImportError:
        pass
    for extra in EXTRA_ERRORS:
        errors.append(extra())
    return tuple(errors)


# Later stages add loaders of their own expected error types here.
EXTRA_ERRORS: list[Callable[[], type[BaseException]]] = []


def load_schema_modules() -> dict[str, object]:
    """Import every schema module (connecting on the way) and return them by name."""
    return {name: importlib.import_module(f"pipeline.{name}") for name in SCHEMA_MODULES}


# --- commands ---------------------------------------------------------------------------------

@command("config", "print the effective configuration, where each value came from, secrets masked")
def _config(args: argparse.Namespace) -> int:
    from . import config
    from .embedded import default_dir

    cfg = config.load_config(config.active().path, check_paths=True)
    print(f"config file: {cfg.path or '(none found: defaults and environment)'}")
    if cfg.host_configured:
        print(f"database: {cfg.get('database.backend') or 'mysql'} server at {cfg.get('database.host')}")
    else:
        print(f"database: embedded PostgreSQL in {cfg.get('database.embedded_dir') or default_dir()}")
    rows = [(s.key, repr(s.value), s.source) for s in cfg.masked()]
    width = max(len(r[0]) for r in rows)
    value_width = min(max(len(r[1]) for r in rows), 60)
    for key, value, source in rows:
        print(f"  {key:<{width}}  {value:<{value_width}}  ({source})")
    return 0


def _configure_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "stop"), help="status: what the pipeline is connected to; stop: stop the embedded server")


@command("db", "database status (backend, version, schemas, row counts) or stop the embedded server", _configure_db)
def _db(args: argparse.Namespace) -> int:
    from . import config
    from .embedded import EmbeddedServer

    cfg = config.active()
    if args.action == "stop":
        if cfg.host_configured:
            print(f"the pipeline uses the server at {cfg.get('database.host')}; there is no embedded server to stop")
            return 0
        server = EmbeddedServer(cfg.get("database.embedded_dir"))
        print("embedded PostgreSQL stopped" if server.stop() else f"embedded PostgreSQL was not running ({server.base_dir})")
        return 0
    if not cfg.host_configured:
        server = EmbeddedServer(cfg.get("database.embedded_dir"))
        state = server.status()
        if not state["running"]:
            print(f"backend: embedded postgresql (not running; data directory {state['data_dir']})")
            return 0
    from .status import database_status

    for line in database_status(cfg):
        print(line)
    return 0


def _configure_erd(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("erd"), help="folder for the images (default ./erd)")


@command("erd", "draw one entity-relationship diagram image per schema", _configure_erd)
def _erd(args: argparse.Namespace) -> int:
    from .diagrams import draw_schema_diagrams

    for path in draw_schema_diagrams(load_schema_modules(), args.out):
        print(path)
    return 0


def _configure_load_subjects(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a .csv or .yaml file of people, rigs, subjects and surgeries")


@command("load-subjects", "load people, rigs, subjects, water restrictions and surgeries from CSV or YAML", _configure_load_subjects)
def _load_subjects(args: argparse.Namespace) -> int:
    from .subject_loader import load_subject_file

    result = load_subject_file(args.file)
    details = ", ".join(f"{n} {what}" for what, n in result.inserted.items() if n)
    print(f"{args.file}: inserted {result.total} row(s)" + (f" ({details})" if details else " (everything was already loaded)"))
    return 0


@command("shell", "an interactive Python with every schema module imported, as MAP's shell")
def _shell(args: argparse.Namespace) -> int:
    import datajoint as dj

    modules = load_schema_modules()
    namespace = {"dj": dj, **modules}
    banner = "map shell.\nschema modules:\n" + "\n".join(f"- {name}" for name in modules)
    try:
        from IPython import start_ipython

        start_ipython(argv=[], user_ns=namespace, display_banner=False)
        return 0
    except ImportError:
        import code

        code.interact(banner=banner, local=namespace)
    return 0


# --- entry point ------------------------------------------------------------------------------

# Modules that register more commands; importing them must not connect to a database.
PLUGIN_MODULES: list[str] = ["pipeline.demo", "ingest.commands", "pipeline.ccf_commands", "pipeline.publication_commands", "pipeline.analysis_commands"]


def _load_command_modules() -> None:
    for module in PLUGIN_MODULES:
        importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    parser = argparse.ArgumentParser(prog="mapshell", description="MAP pipeline shell.")
    parser.add_argument("--config", type=Path, help="a dj_local_conf.json to use instead of the usual lookup")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name in sorted(COMMANDS):
        cmd = COMMANDS[name]
        cmd.configure(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    errors = _expected_errors()
    try:
        from . import config

        if args.config:
            config.set_active(config.load_config(args.config, check_paths=False))
        return COMMANDS[args.command].run(args) or 0
    except errors as err:
        print(f"mapshell {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mapshell {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the imported module, whose registry the plugin modules add their commands to.
    from pipeline.shell import main as _main

    sys.exit(_main())

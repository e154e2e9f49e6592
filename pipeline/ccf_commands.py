"""``mapshell load-ccf``: load Allen CCF annotation volumes and their ontology.

Importing this module registers the command and must not connect to a database: the schema
module is imported inside the command. Wire it by adding ``"pipeline.ccf_commands"`` to
``pipeline.shell.PLUGIN_MODULES``.

Without ``--nrrd``, every ``[name, folder, order]`` entry of the config's ``ccf_data_paths``
is loaded: each ``annotation_<res>.nrrd`` in the folder with the folder's ``ontology.csv``, as
version ``<name>_<res>um`` (e.g. ``CCFv3_25um``).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .shell import EXTRA_ERRORS, command


def _reader_error() -> type[BaseException]:
    from ingest.readers.errors import ReaderError

    return ReaderError


if _reader_error not in EXTRA_ERRORS:
    EXTRA_ERRORS.append(_reader_error)  # bad NRRD / ontology: one line on stderr, exit status 2

_ANNOTATION = re.compile(r"^annotation_(\d+)\.nrrd$")


@dataclass(frozen=True)
class Source:
    nrrd: Path
    ontology: Path
    version: str | None  # None: CCF_<res>um
    resolution: int | None


def resolution_from_name(path: Path) -> int | None:
    match = _ANNOTATION.match(path.name)
    return int(match.group(1)) if match else None


def default_sources(entries: list[tuple[str, Path, int]]) -> list[Source]:
    """The volumes named by ``ccf_data_paths`` entries, in their order."""
    from ingest.readers.errors import ReaderError

    sources = []
    for name, folder, _ in entries:
        if not folder.is_dir():
            raise ReaderError(folder, f"ccf_data_paths entry {name!r}: folder does not exist")
        volumes = sorted((p for p in folder.glob("annotation_*.nrrd") if _ANNOTATION.match(p.name)),
                         key=resolution_from_name)
        if not volumes:
            raise ReaderError(folder, f"ccf_data_paths entry {name!r}: no annotation_<resolution>.nrrd here")
        for path in volumes:
            res = resolution_from_name(path)
            sources.append(Source(path, folder / "ontology.csv", f"{name}_{res}um", res))
    return sources


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nrrd", type=Path, help="annotation volume (default: every annotation_*.nrrd of ccf_data_paths)")
    parser.add_argument("--ontology", type=Path, help="ontology CSV (default: ontology.csv next to the volume)")
    parser.add_argument("--resolution", type=float, help="voxel size in um (default: the NRRD header, else the file name)")
    parser.add_argument("--version", help="annotation version name, at most 32 characters "
                                          "(default: <ccf_data_paths name>_<res>um, or CCF_<res>um with --nrrd)")


@command("load-ccf", "load Allen CCF annotation volumes and ontology (from ccf_data_paths, or --nrrd/--ontology)", _configure)
def _load_ccf(args: argparse.Namespace) -> int:
    from . import config

    if args.nrrd is None:
        if args.ontology is not None:
            print("mapshell load-ccf: error: --ontology needs --nrrd", file=sys.stderr)
            return 2
        entries = config.active().data_paths("ccf_data_paths")
        if not entries:
            print("mapshell load-ccf: error: no ccf_data_paths in the config and no --nrrd given", file=sys.stderr)
            return 2
        sources = default_sources(entries)
        if args.version and len(sources) > 1:
            print(f"mapshell load-ccf: error: --version names one volume but ccf_data_paths gives {len(sources)}",
                  file=sys.stderr)
            return 2
    else:
        sources = [Source(args.nrrd, args.ontology or args.nrrd.parent / "ontology.csv", None,
                          resolution_from_name(args.nrrd))]

    from . import ccf  # connects: only now

    from ingest.readers.ccf import read_nrrd_header

    for source in sources:
        header_res = read_nrrd_header(source.nrrd).resolution_um
        resolution = args.resolution if args.resolution is not None else (
            None if header_res is not None else source.resolution)
        effective = resolution if resolution is not None else header_res
        version = args.version or source.version or (f"CCF_{effective:g}um" if effective else "CCF")
        try:
            summary = ccf.load_ccf(source.nrrd, source.ontology, version_name=version, resolution=resolution)
        except ccf.CCFError as err:
            print(f"mapshell load-ccf: error: {err}", file=sys.stderr)
            return 2
        print(summary)
    return 0


def _demo_load_ccf(context) -> str:
    """Demo stage: the simulated share's small annotation volume and ontology."""
    from . import ccf

    lines = []
    for source in default_sources(context.config.data_paths("ccf_data_paths")):
        lines.append(str(ccf.load_ccf(source.nrrd, source.ontology, version_name=source.version, resolution=source.resolution)))
    return "; ".join(lines)


def _register_demo_stage() -> None:
    from .demo import demo_stage

    demo_stage("load CCF", order=10)(_demo_load_ccf)


_register_demo_stage()

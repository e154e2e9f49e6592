"""mapshell commands of the publication layer: publication-login, publish, discover, retrieve,
publication-status; and the demo stage :func:`demo_publication`.

Importing this module registers the commands and does not connect to a database: each command
imports ``pipeline.publication`` when it runs. Wire it by adding
``"pipeline.publication_commands"`` to ``pipeline.shell.PLUGIN_MODULES``.
Transfer-layer errors (expired login, missing consent, failed task, bad setting) end as one line
on stderr with exit status 2: the message says what to run.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import time
from pathlib import Path

from .shell import EXTRA_ERRORS, command

KIND_CHOICES = {"ephys": "ephys-raw", "video": "tracking-video"}


def _transfer_error() -> type[BaseException]:
    from .transfer import TransferError

    return TransferError


if _transfer_error not in EXTRA_ERRORS:
    EXTRA_ERRORS.append(_transfer_error)


def _kinds(args: argparse.Namespace) -> list[str]:
    return [KIND_CHOICES[k] for k in (args.kind or list(KIND_CHOICES))]


def _restriction(args: argparse.Namespace):
    """A DataJoint restriction from --subject / --session / --where."""
    parts: list = []
    if getattr(args, "subject", None) is not None:
        parts.append({"subject_id": args.subject})
    if getattr(args, "session", None) is not None:
        parts.append({"session": args.session})
    if getattr(args, "where", None):
        parts.append(args.where)
    return parts


# --- publication-login ----------------------------------------------------------------------------

def _configure_login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--browser", action="store_true", help="open the login page in a browser")


@command("publication-login", "log in to Globus (native app, refresh tokens) and store the tokens in a private file",
         _configure_login)
def _login(args: argparse.Namespace) -> int:
    from . import config
    from .transfer import auth
    from .transfer.base import AuthError

    custom = config.active().custom_dict
    client_id = custom.get("globus.client_id")
    if not client_id:
        raise AuthError("setting 'globus.client_id' (the Globus native app's client id) is missing from the "
                        "config's custom block", hint=None)
    path = auth.login_native(client_id, custom.get("globus.token_file") or auth.DEFAULT_TOKEN_FILE,
                             no_browser=not args.browser)
    print(f"Globus login stored in {path} (readable by you only); it is not written to dj_local_conf.json")
    return 0


# --- publish ----------------------------------------------------------------------------------------

def _configure_publish(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=sorted(KIND_CHOICES), action="append",
                        help="ephys or video (default both; repeat for both)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be transferred, with sizes; transfer nothing")
    parser.add_argument("--no-scan", action="store_true", help="use the share record as it is; do not rescan first")
    parser.add_argument("--subject", type=int, help="only this subject_id")
    parser.add_argument("--session", type=int, help="only this session number")
    parser.add_argument("--where", help="a DataJoint restriction string on experiment.Session, e.g. \"session_date > '2018-04-03'\"")


def _scan(kinds: list[str]) -> list[str]:
    from ingest.commands import _scan_lines

    from .publication import KINDS

    return _scan_lines([KINDS[k].share_kind for k in kinds])


def dry_run_lines(kinds: list[str], restriction=None) -> list[str]:
    from . import experiment
    from .publication import publish_plan

    plan = publish_plan(kinds)
    if restriction:
        keep = {(r["subject_id"], r["session"]) for r in (experiment.Session & restriction).proj().to_dicts()}
        plan = [p for p in plan if (p["subject_id"], p["session"]) in keep]
    lines = [f"{p['dataset_type']} subject {p['subject_id']} session {p['session']}: {p['dataset_name']} "
             f"{p['files']} file(s), {p['bytes'] / 1e6:.1f} MB" for p in plan]
    total = sum(p["bytes"] for p in plan)
    lines.append(f"would publish {len(plan)} data set(s), {sum(p['files'] for p in plan)} file(s), {total / 1e6:.1f} MB")
    return lines


@command("publish", "archive raw ephys and video of every session not yet archived (Globus or local endpoint)",
         _configure_publish)
def _publish(args: argparse.Namespace) -> int:
    kinds = _kinds(args)
    restriction = _restriction(args)
    lines = [] if args.no_scan else _scan(kinds)
    if args.dry_run:
        print("\n".join(lines + dry_run_lines(kinds, restriction)))
        return 0
    from . import publication

    preflight()
    summaries = publication.publish(kinds, restriction or None, progress=False)
    for summary in summaries:
        lines.append(summary.line())
        lines += [f"  error: {message}" for message in summary.errors]
    print("\n".join(lines))
    return 1 if any(s.errors for s in summaries) else 0


def preflight() -> None:
    """Fail fast (login hint, missing endpoint) before checksumming anything."""
    from . import publication

    settings = publication.PublicationSettings.from_config()
    backend = publication.get_backend(settings)
    backend.stat(settings.endpoint.endpoint, settings.endpoint.remote_path(""))
    for location in settings.locations.values():
        backend.stat(location.endpoint, "/")


# --- discover ---------------------------------------------------------------------------------------

def _configure_discover(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=sorted(KIND_CHOICES), action="append", help="ephys or video (default both)")


@command("discover", "register sessions already in the archive (no transfer), e.g. after the local files are gone",
         _configure_discover)
def _discover(args: argparse.Namespace) -> int:
    from . import publication

    for report in publication.discover(_kinds(args)):
        print(report.line())
    return 0


# --- retrieve ---------------------------------------------------------------------------------------

def _configure_retrieve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=sorted(KIND_CHOICES), action="append", help="ephys or video (default both)")
    parser.add_argument("--subject", type=int, help="subject_id")
    parser.add_argument("--session", type=int, help="session number")
    parser.add_argument("--where", help="a DataJoint restriction string on the archive table")
    parser.add_argument("--overwrite", action="store_true", help="replace local files that differ from the archive")
    parser.add_argument("--into", help="folder under the local endpoint path (default: the location's local_subdir)")


@command("retrieve", "copy archived files back to the local endpoint and check every checksum", _configure_retrieve)
def _retrieve(args: argparse.Namespace) -> int:
    from . import publication

    restriction = _restriction(args)
    if not restriction:
        print("mapshell retrieve: error: name what to fetch: --subject, --session and/or --where", file=sys.stderr)
        return 2
    datasets = []
    for kind in _kinds(args):
        table = publication.ARCHIVE_TABLES[kind]
        query = table()
        for part in restriction:
            query = query & part
        datasets += query.proj("globus_alias", "dataset_name").to_dicts()
    if not datasets:
        print("nothing archived matches")
        return 1
    try:
        reports = publication.retrieve_datasets(datasets, overwrite=args.overwrite, into=args.into)
    except publication.RetrieveError as err:
        for report in getattr(err, "reports", []):
            print(report.line())
        raise
    for report in reports:
        print(report.line())
    return 0


# --- status -----------------------------------------------------------------------------------------

@command("publication-status", "what is archived, pending on the share, in progress and failed")
def _status(args: argparse.Namespace) -> int:
    from . import publication

    print("\n".join(publication.status_lines()))
    return 0


# --- demo stage -------------------------------------------------------------------------------------

def demo_publication(context) -> str:
    """Demo stage: publish the simulated share to a local-endpoint archive in a scratch folder,
    retrieve everything into a second scratch 'machine', check every byte, then delete one retrieved
    session and fetch it again. The share itself is never modified.

    Takes a ``pipeline.demo.DemoContext``; register with ``demo_stage("publication")``.
    """
    from . import config as _config

    scratch = context.share.parent / f"{context.share.name}-publication"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "archive").mkdir(parents=True)
    (scratch / "restore").mkdir()
    base = context.config

    def set_custom(values: dict) -> None:  # each call adds to what the earlier ones set
        _config.set_active(_config.active().with_custom(values, "demo"))

    _config.set_active(base)

    set_custom({
        "globus.backend": "local",
        "globus.storage_locations": {
            "raw-ephys": {"endpoint": "demo-archive", "root": "/4ElectrodeRig_Ephys", "local_subdir": "ephys"},
            "raw-video": {"endpoint": "demo-archive", "root": "/video", "local_subdir": "video"}},
        "globus.local_collections": {"demo-share": str(context.share), "demo-restore": str(scratch / "restore"),
                                     "demo-archive": str(scratch / "archive")},
        "globus.local_state_dir": str(scratch / "tasks"),
        "globus.local_endpoint": "demo-share", "globus.local_endpoint_subdir": "",
        "globus.local_endpoint_local_path": str(context.share),
    })
    try:
        from ingest import share

        from . import publication

        share.scan(["ephys", "video"])
        # the demo's own schemas: start from an empty archive record, as the archive folder is new
        for table in (publication.ArchivedRawEphys, publication.ArchivedTrackingVideo, publication.ArchivedSession,
                      publication.DataSet.PhysicalFile, publication.DataSet, publication.TransferTask):
            table().delete_quick()
        started = time.perf_counter()
        summaries = publication.publish()
        published = time.perf_counter() - started
        errors = [e for s in summaries for e in s.errors]
        if errors:
            return f"publish failed: {errors[0]}"
        nbytes = sum(int(s) for s in publication.DataSet.PhysicalFile().to_arrays("file_size"))
        # a second machine: the local endpoint is now an empty scratch folder
        set_custom({"globus.local_endpoint": "demo-restore",
                    "globus.local_endpoint_local_path": str(scratch / "restore")})
        started = time.perf_counter()
        reports = publication.ArchivedSession().retrieve()
        retrieved = time.perf_counter() - started
        files = [Path(p) for r in reports for p in r.fetched]
        restore = scratch / "restore"
        different = [p for p in files if not filecmp.cmp(p, context.share / p.relative_to(restore), shallow=False)]
        # delete one session's local copy and fetch it again
        one = publication.ArchivedRawEphys().proj("globus_alias", "dataset_name").to_dicts()[:1]
        again = 0
        if one:
            folder = restore / "ephys" / one[0]["dataset_name"]
            shutil.rmtree(folder)
            again_reports = publication.retrieve_datasets(one)
            again = sum(len(r.fetched) for r in again_reports)
            different += [Path(p) for r in again_reports for p in r.fetched
                          if not filecmp.cmp(p, context.share / Path(p).relative_to(restore), shallow=False)]
        status = "identical" if not different else f"{len(different)} DIFFERENT: {different[:3]}"
        return (f"{sum(s.inserted for s in summaries)} data set(s), {nbytes / 1e6:.1f} MB published in {published:.1f} s; "
                f"{len(files)} file(s) retrieved into {restore} in {retrieved:.1f} s, bytes {status}; "
                f"one session deleted and fetched again ({again} files)")
    finally:
        _config.set_active(base)


def _register_demo_stage() -> None:
    from .demo import demo_stage

    demo_stage("publish, delete local copy, retrieve", order=40)(demo_publication)


_register_demo_stage()

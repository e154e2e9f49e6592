"""``publication``: archiving raw data files over Globus (or the local endpoint), as MAP's.

What goes where
---------------
* A session's raw files are found in the share record (``ingest.share.ShareFile``), never by
  walking the share: ephys = the files of the session's CatGT folder
  ``<h2o>/catgt_<run>_g0/...`` that match an ``ephys-raw-*`` :class:`FileType` glob, video =
  ``<h2o>/<YYYYMMDD>[_k]/video/*`` matching ``tracking-video-*``. ``run`` is
  ``<h2o>_<YYYYMMDD>`` for the subject's first session of that day and
  ``<h2o>_<YYYYMMDD>_<k>`` for the k-th later one (sessions of a day ordered by start time).
* The archive keeps the same layout under each storage location's root
  (``raw-ephys``: ``<root>/<h2o>/catgt_<run>_g0/...``, ``raw-video``:
  ``<root>/<h2o>/<YYYYMMDD>[_k]/video/...``). One :class:`DataSet` per session and kind; its
  name is that folder relative to the root.

Publish (``ArchivedRawEphys.populate()`` / :func:`publish`) uses DataJoint's tripartite make:
``make_fetch`` reads the session's files from the share record, ``make_compute`` (outside any
transaction) checksums every file, saves a :class:`TransferTask` row with a fresh submission id
*before* submitting one task per session (MD5 of each file as ``external_checksum``,
``verify_checksum`` on, ``sync_level='checksum'``), then waits; ``make_insert`` records the
DataSet, its files and the archive rows, in populate's transaction, only after the task
SUCCEEDED. A process killed while waiting leaves its TransferTask row ACTIVE: the next run
submits again with the saved submission id, which yields the same task (Globus answers
``Duplicate``; the local endpoint keeps a submission marker), so nothing is copied twice.

``discover()`` registers sessions already in the archive, from remote listings only.
``retrieve()`` copies data sets back to the local endpoint and checks every file's MD5.

Configuration (``custom`` block of ``dj_local_conf.json``)::

    "globus.backend": "globus" | "local",
    "globus.storage_locations": {"raw-ephys": {"endpoint": "<id>", "root": "/4ElectrodeRig_Ephys"},
                                 "raw-video": {"endpoint": "<id>", "root": "/",
                                               "local_subdir": "video"}},   # optional, see below
    "globus.local_endpoint": "<id>", "globus.local_endpoint_subdir": "map/raw",
    "globus.local_endpoint_local_path": "/globus/map/raw",
    "globus.client_id": "<native app id>", "globus.token_file": "~/.config/...",  (globus)
    "globus.local_collections": {"<id>": "/dir", ...}, "globus.local_state_dir": "/dir", (local)
    "globus.task_timeout": 86400, "globus.poll_interval": 10        (optional)

The rig shares must lie under ``globus.local_endpoint_local_path`` (the local endpoint is what
Globus reads them through). ``local_subdir`` is where :func:`retrieve` puts a location's data
sets under the local endpoint path; by default the folder of the first configured share of
that kind, relative to the local endpoint path (so files come back where they were), else the
endpoint path itself (MAP's behaviour).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import fnmatch
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import datajoint as dj

from . import config as _config
from . import ephys, experiment, lab  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema
from .transfer import (
    NotFound,
    TaskFailed,
    TaskStatus,
    TransferBackend,
    TransferError,
    TransferItem,
    md5_file,
)
from .transfer.base import join_remote, normalize_remote_path, validate_name
from .transfer.config import LocalEndpoint, StorageLocation, backend_from_settings, local_endpoint, storage_locations

log = logging.getLogger(__name__)

schema = _schema("publication")

EPHYS, VIDEO = "ephys-raw", "tracking-video"


@schema
class GlobusStorageLocation(dj.Lookup):
    definition = """
    # globus storage locations
    globus_alias : varchar(32)       # name for location (e.g. 'raw-ephys')
    ---
    globus_endpoint : varchar(255)   # globus endpoint (user#endpoint)
    globus_path : varchar(1024)      # unix-style path within endpoint
    """


@schema
class DataSetType(dj.Lookup):
    definition = """
    dataset_type : varchar(64)
    """
    contents = [("ephys-raw",), ("tracking-video",)]


@schema
class FileType(dj.Lookup):
    definition = """
    file_type : varchar(32)          # file type short name
    ---
    file_glob : varchar(64)          # file match pattern
    file_descr : varchar(255)        # file type long description
    """
    contents = [
        ("ephys-raw-ap-bin", "*.ap.bin", "SpikeGLX/CatGT action-potential band binary"),
        ("ephys-raw-ap-meta", "*.ap.meta", "SpikeGLX/CatGT action-potential band metadata"),
        ("ephys-raw-lf-bin", "*.lf.bin", "SpikeGLX/CatGT local-field band binary"),
        ("ephys-raw-lf-meta", "*.lf.meta", "SpikeGLX/CatGT local-field band metadata"),
        ("ephys-raw-sync", "*.XA_*.txt", "CatGT sync edge times"),
        ("tracking-video-trial", "*_*_*-*.avi", "raw per-trial behaviour video"),
        ("ephys-raw-nidq-bin", "*.nidq.bin", "SpikeGLX/CatGT NI-DAQ binary"),
        ("ephys-raw-nidq-meta", "*.nidq.meta", "SpikeGLX/CatGT NI-DAQ metadata"),
        ("ephys-raw-bitcode", "*_bitcode.mat", "per-session trial start / bitcode file"),
    ]


@schema
class DataSet(dj.Manual):
    definition = """
    # a set of files archived together (one session's raw files of one kind)
    -> GlobusStorageLocation
    dataset_name : varchar(255)      # folder under the location's root, e.g. dl30/catgt_dl30_20180403_g0
    ---
    -> DataSetType
    """

    class PhysicalFile(dj.Part):
        definition = """
        -> master
        file_subpath : varchar(255)  # path relative to the data set folder, '/'-separated
        ---
        -> FileType
        file_size : int64            # bytes
        file_md5 = null : char(32)   # hex MD5; null if registered by discover() and not yet retrieved
        """

    def retrieve(self, *, overwrite: bool = False, into: str | None = None) -> list["RetrieveReport"]:
        """Copy these data sets to the local endpoint; see :func:`retrieve_datasets`."""
        return retrieve_datasets(self.proj().to_dicts(), overwrite=overwrite, into=into)


@schema
class ArchivedSession(dj.Manual):
    definition = """
    # a session with raw files in the archive (inserted by publish and discover)
    -> experiment.Session
    """

    def retrieve(self, *, overwrite: bool = False, into: str | None = None) -> list["RetrieveReport"]:
        keys = self.proj().to_dicts()
        datasets = []
        for table in (ArchivedRawEphys, ArchivedTrackingVideo):
            datasets += (table & keys).proj("globus_alias", "dataset_name").to_dicts()
        return retrieve_datasets(datasets, overwrite=overwrite, into=into)


@schema
class TransferTask(dj.Manual):
    definition = """
    # one transfer task (publish or retrieve); the submission id is saved before submitting
    submission_id : varchar(64)
    ---
    direction : enum('publish','retrieve')
    -> GlobusStorageLocation
    dataset_name : varchar(255)      # data set the task copies
    items_md5 : char(32)             # MD5 of the submitted item list: a resubmission must match it
    task_id = null : varchar(64)     # known once submitted
    status : varchar(16)             # SUBMITTING, ACTIVE, SUCCEEDED, FAILED
    n_files : int32                  # files submitted
    n_bytes : int64                  # bytes submitted
    bytes_transferred = null : int64
    files_skipped = null : int32
    submitted : datetime
    updated = null : datetime
    completed = null : datetime
    faults = null : varchar(4000)    # the task's own fault descriptions
    index (globus_alias, dataset_name)
    """


# --------------------------------------------------------------------------- kinds and layout
@dataclasses.dataclass(frozen=True)
class ArchiveKind:
    """One kind of raw data: where it is on the share and in the archive."""

    dataset_type: str
    location: str            # storage alias
    share_kind: str          # ingest.share data kind
    pattern: re.Pattern      # share relpath -> h2o, date, k, subpath
    dataset_format: str      # dataset name from h2o, day ('YYYYMMDD') and suffix ('' or '_k')

    def dataset_name(self, h2o: str, day: str, k: int) -> str:
        return self.dataset_format.format(h2o=h2o, day=day, suffix=f"_{k}" if k else "")

    def parse(self, relpath: str) -> tuple[str, str, int, str] | None:
        """(h2o, day, k, subpath) of a share file of this kind, or None."""
        m = self.pattern.match(relpath)
        if not m:
            return None
        return m["h2o"], m["day"], int(m["k"] or 0), m["sub"]

    def parse_dataset(self, name: str) -> tuple[str, str, int] | None:
        m = self.pattern.match(name + "/x")
        return (m["h2o"], m["day"], int(m["k"] or 0)) if m else None


KINDS: dict[str, ArchiveKind] = {
    EPHYS: ArchiveKind(
        EPHYS, "raw-ephys", "ephys",
        re.compile(r"^(?P<h2o>[^/]+)/catgt_(?P=h2o)_(?P<day>\d{8})(?:_(?P<k>[1-9]\d*))?_g0/(?P<sub>.+)$"),
        "{h2o}/catgt_{h2o}_{day}{suffix}_g0",
    ),
    VIDEO: ArchiveKind(
        VIDEO, "raw-video", "video",
        re.compile(r"^(?P<h2o>[^/]+)/(?P<day>\d{8})(?:_(?P<k>[1-9]\d*))?/(?P<sub>.+)$"),
        "{h2o}/{day}{suffix}",
    ),
}


def file_types(dataset_type: str) -> list[tuple[str, str]]:
    """(file_type, glob) of a data set type: the FileType rows named '<dataset_type>-*'."""
    rows = FileType().to_dicts()
    return [(r["file_type"], r["file_glob"]) for r in sorted(rows, key=lambda r: r["file_type"])
            if r["file_type"].startswith(dataset_type + "-")]


def match_file_type(kind: ArchiveKind, subpath: str, types: Sequence[tuple[str, str]]) -> str | None:
    """The file type of a file in a data set, or None if it is not a raw file of this kind."""
    if kind.dataset_type == VIDEO and not re.fullmatch(r"video/[^/]+", subpath):
        return None
    name = subpath.rsplit("/", 1)[-1]
    for file_type, glob in types:
        if fnmatch.fnmatchcase(name, glob):
            return file_type
    return None


@dataclasses.dataclass
class SessionIndex:
    """Sessions by (h2o, 'YYYYMMDD', same-day index k) and back."""

    by_day: dict[tuple[str, str, int], dict[str, int]]
    by_session: dict[tuple[int, int], tuple[str, str, int]]

    @classmethod
    def load(cls, restriction: Any = None) -> "SessionIndex":
        by_day = {(h2o, date.strftime("%Y%m%d"), k): {"subject_id": int(s["subject_id"]), "session": int(s["session"])}
                  for (h2o, date, k), s in experiment.sessions_by_day(restriction).items()}
        return cls(by_day, {(s["subject_id"], s["session"]): day for day, s in by_day.items()})


def share_raw_files(kind: ArchiveKind, h2o: str | None = None) -> dict[tuple[str, str, int], list[dict]]:
    """Present raw files of a kind in the share record (of one h2o), grouped by (h2o, day, k)."""
    from ingest import share

    roots = {r["root_hash"]: r for r in (share.ShareRoot & {"data_kind": kind.share_kind}).to_dicts()}
    if not roots:
        return {}
    types = file_types(kind.dataset_type)
    files = share.ShareFile & {"status": "present"} & [{"root_hash": h} for h in roots]
    if h2o is not None:
        files = files & ("relpath LIKE '%s/%%'" % h2o.replace("\\", "").replace("'", "''"))
    files = files.proj("relpath", "size", "mtime").to_dicts()
    grouped: dict[tuple[str, str, int], dict[str, dict]] = collections.defaultdict(dict)
    for f in sorted(files, key=lambda f: (roots[f["root_hash"]]["root_order"], f["relpath"])):
        parsed = kind.parse(f["relpath"])
        if parsed is None:
            continue
        h2o, day, k, sub = parsed
        file_type = match_file_type(kind, sub, types)
        if file_type is None or sub in grouped[(h2o, day, k)]:
            continue  # not raw, or already found under a root of lower order
        root = roots[f["root_hash"]]
        grouped[(h2o, day, k)][sub] = {
            "path": str(Path(root["root_path"]) / f["relpath"]),
            "subpath": sub,
            "file_type": file_type,
            "size": int(f["size"]),
            "mtime": float(f["mtime"]),
            "dataset_name": kind.dataset_name(h2o, day, k),
        }
    return {key: [v[s] for s in sorted(v)] for key, v in grouped.items() if v}


def sessions_with_raw_files(kind: ArchiveKind) -> list[dict]:
    index = SessionIndex.load()
    return [index.by_day[day_key] for day_key in share_raw_files(kind) if day_key in index.by_day]


def session_raw_files(kind: ArchiveKind, key: Mapping[str, Any]) -> list[dict]:
    """The raw files of one session (empty if it has none or is unknown)."""
    index = SessionIndex.load({"subject_id": key["subject_id"]})
    day_key = index.by_session.get((int(key["subject_id"]), int(key["session"])))
    if day_key is None:
        return []
    return share_raw_files(kind, day_key[0]).get(day_key, [])


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass
class PublicationSettings:
    """The ``globus.*`` settings the publication layer needs, checked once."""

    custom: Mapping[str, Any]
    locations: dict[str, StorageLocation]
    endpoint: LocalEndpoint
    timeout: float
    poll_interval: float

    @classmethod
    def from_config(cls, custom: Mapping[str, Any] | None = None) -> "PublicationSettings":
        custom = dict(_config.active().custom_dict if custom is None else custom)
        local = custom.get("globus.backend", "globus") == "local"
        return cls(
            custom=custom,
            locations=storage_locations(custom),
            endpoint=local_endpoint(custom),
            timeout=float(custom.get("globus.task_timeout") or 24 * 3600),
            poll_interval=float(custom.get("globus.poll_interval") or (0.1 if local else 10)),
        )

    def location(self, alias: str) -> StorageLocation:
        try:
            return self.locations[alias]
        except KeyError:
            raise TransferError(
                f"no storage location {alias!r} in setting 'globus.storage_locations' "
                f"(have: {sorted(self.locations) or 'none'})") from None

    def source_path(self, path: str | os.PathLike[str]) -> str:
        """Remote path, on the local endpoint, of a local file (which must lie under it)."""
        absolute = Path(os.path.abspath(path))
        base = Path(os.path.abspath(self.endpoint.local_path))
        try:
            rel = absolute.relative_to(base)
        except ValueError:
            raise TransferError(
                f"{absolute} is not under the local Globus endpoint's folder {base} "
                "(setting 'globus.local_endpoint_local_path'); the endpoint cannot read it") from None
        return self.endpoint.remote_path(rel.as_posix())

    def local_subdir(self, alias: str) -> str:
        """Where retrieve() puts a location's data sets, relative to the local endpoint path."""
        spec = (self.custom.get("globus.storage_locations") or {}).get(alias) or {}
        if spec.get("local_subdir") is not None:
            sub = str(spec["local_subdir"]).strip("/")
        else:
            sub = ""
            kind = next((k for k in KINDS.values() if k.location == alias), None)
            paths = self.custom.get(f"{kind.share_kind}_data_paths") if kind else None
            base = Path(os.path.abspath(self.endpoint.local_path))
            for _, path, _ in sorted(paths or [], key=lambda e: int(e[2])):
                try:
                    sub = Path(os.path.abspath(path)).relative_to(base).as_posix()
                    sub = "" if sub == "." else sub
                except ValueError:
                    continue
                break
        if sub:
            normalize_remote_path("/" + sub)
        return sub


_BACKEND_OVERRIDE: TransferBackend | None = None


def use_backend(backend: TransferBackend | None) -> None:
    """Use this backend instead of the configured one (tests, notebooks); None to reset."""
    global _BACKEND_OVERRIDE
    _BACKEND_OVERRIDE = backend


def get_backend(settings: PublicationSettings) -> TransferBackend:
    return _BACKEND_OVERRIDE if _BACKEND_OVERRIDE is not None else backend_from_settings(settings.custom)


def sync_storage_locations(settings: PublicationSettings | None = None) -> list[str]:
    """GlobusStorageLocation rows from ``globus.storage_locations`` (added or updated)."""
    settings = settings or PublicationSettings.from_config()
    for loc in settings.locations.values():
        row = {"globus_alias": loc.name, "globus_endpoint": loc.endpoint, "globus_path": loc.root}
        have = (GlobusStorageLocation & {"globus_alias": loc.name}).to_dicts()
        if not have:
            GlobusStorageLocation.insert1(row, skip_duplicates=True)
        elif have[0] != row:
            GlobusStorageLocation.update1(row)
    return sorted(settings.locations)


# --------------------------------------------------------------------------- tasks
def _now() -> dt.datetime:
    return dt.datetime.now().replace(microsecond=0)


def items_digest(items: Sequence[TransferItem]) -> str:
    text = json.dumps([dataclasses.astuple(i) for i in items], sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()


def _fault_text(status: TaskStatus) -> str | None:
    parts = list(status.faults) or ([status.fatal_error] if status.fatal_error else [])
    return "; ".join(parts)[:4000] or None


def record_status(submission_id: str, status: TaskStatus) -> None:
    row = {"submission_id": submission_id, "task_id": status.task_id, "status": status.status,
           "bytes_transferred": int(status.bytes_transferred), "files_skipped": int(status.files_skipped),
           "updated": _now(), "faults": _fault_text(status)}
    if status.done:
        row["completed"] = _now()
    TransferTask.update1(row)


def resumable_submission(alias: str, dataset_name: str, digest: str) -> dict | None:
    """The latest publish task of this data set that may still be running, if its items match."""
    rows = (TransferTask & {"direction": "publish", "globus_alias": alias, "dataset_name": dataset_name,
                            "items_md5": digest}
            & "status in ('SUBMITTING','ACTIVE')").to_dicts()
    return max(rows, key=lambda r: r["submitted"]) if rows else None


def run_transfer(
    settings: PublicationSettings,
    backend: TransferBackend,
    *,
    direction: str,
    alias: str,
    dataset_name: str,
    source_endpoint: str,
    destination_endpoint: str,
    items: Sequence[TransferItem],
    n_bytes: int,
    label: str,
) -> TaskStatus:
    """Submit one task (reusing a saved submission id for publish), wait, record, raise unless SUCCEEDED."""
    digest = items_digest(items)
    saved = resumable_submission(alias, dataset_name, digest) if direction == "publish" else None
    for attempt in ("resume", "new") if saved else ("new",):
        if attempt == "new":
            submission_id = backend.submission_id()
            TransferTask.insert1({
                "submission_id": submission_id, "direction": direction, "globus_alias": alias,
                "dataset_name": dataset_name, "items_md5": digest, "status": "SUBMITTING",
                "n_files": len(items), "n_bytes": int(n_bytes), "submitted": _now()})
        else:
            submission_id = saved["submission_id"]
            log.info("resuming %s of %s with saved submission id %s", direction, dataset_name, submission_id)
        task_id = backend.submit_transfer(
            source_endpoint, destination_endpoint, items, submission_id=submission_id, label=label,
            sync_level="checksum", verify_checksum=True)
        TransferTask.update1({"submission_id": submission_id, "task_id": task_id, "status": "ACTIVE", "updated": _now()})
        status = backend.wait(task_id, timeout=settings.timeout, poll_interval=settings.poll_interval)
        record_status(submission_id, status)
        if status.succeeded:
            return status
        if status.status == "ACTIVE":
            raise TransferError(
                f"transfer task {task_id} ({label}) still ACTIVE after {settings.timeout:g} s; it keeps running: "
                "run publish again later to pick it up")
        if attempt == "resume":
            # It failed while nobody was watching (e.g. its worker was killed with us): one fresh try.
            log.warning("resumed task %s had ended %s (%s); submitting again", task_id, status.status,
                        _fault_text(status))
            continue
        raise TaskFailed(status)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- publish
def checksum_files(paths: Sequence[str]) -> list[str]:
    """Hex MD5 of each file (read once, in 8 MiB blocks)."""
    return [md5_file(p) for p in paths]


def publish_session(kind: ArchiveKind, key: Mapping[str, Any], files: Sequence[dict],
                    settings: PublicationSettings | None = None) -> tuple[dict, list[dict]]:
    """Checksum, transfer and verify one session's raw files; returns the rows to record."""
    if not files:
        raise TransferError(f"session {dict(key)} has no {kind.dataset_type} files in the share record")
    settings = settings or PublicationSettings.from_config()
    sync_storage_locations(settings)
    location = settings.location(kind.location)
    dataset_name = files[0]["dataset_name"]
    for f in files:
        size = os.stat(f["path"]).st_size
        if size != f["size"]:
            raise TransferError(f"{f['path']} is {size} bytes but the share record says {f['size']}: "
                                "it changed since the last scan; run `mapshell scan` first")
    sources = [settings.source_path(f["path"]) for f in files]
    md5s = checksum_files([f["path"] for f in files])
    items = [TransferItem(src, location.remote(dataset_name, f["subpath"]), external_checksum=md5)
             for src, f, md5 in zip(sources, files, md5s)]
    backend = get_backend(settings)
    run_transfer(settings, backend, direction="publish", alias=location.name, dataset_name=dataset_name,
                 source_endpoint=settings.endpoint.endpoint, destination_endpoint=location.endpoint,
                 items=items, n_bytes=sum(f["size"] for f in files),
                 label=f"MAP publish {kind.dataset_type} {dataset_name}"[:128])
    dataset = {"globus_alias": location.name, "dataset_name": dataset_name, "dataset_type": kind.dataset_type}
    rows = [{"globus_alias": location.name, "dataset_name": dataset_name, "file_subpath": f["subpath"],
             "file_type": f["file_type"], "file_size": f["size"], "file_md5": md5} for f, md5 in zip(files, md5s)]
    return dataset, rows


def record_archive(table: type[dj.Table], key: Mapping[str, Any], dataset: dict, rows: list[dict]) -> None:
    """Insert a data set and its archive rows (inside the caller's transaction)."""
    session = {"subject_id": key["subject_id"], "session": key["session"]}
    ArchivedSession.insert1(session, skip_duplicates=True)
    DataSet.insert1(dataset)
    DataSet.PhysicalFile.insert(rows)
    table.insert1({**session, "globus_alias": dataset["globus_alias"], "dataset_name": dataset["dataset_name"]},
                  allow_direct_insert=True)


class _ArchiveTable:
    """Shared behaviour of ArchivedRawEphys and ArchivedTrackingVideo."""

    _kind: str

    @property
    def key_source(self):
        return experiment.Session.proj() & sessions_with_raw_files(KINDS[self._kind])

    def make_fetch(self, key):
        return (session_raw_files(KINDS[self._kind], key),)

    def make_compute(self, key, files):
        return publish_session(KINDS[self._kind], key, files)

    def make_insert(self, key, dataset, rows):
        record_archive(type(self), key, dataset, rows)

    def retrieve(self, *, overwrite: bool = False, into: str | None = None) -> list["RetrieveReport"]:
        """Fetch these sessions' files to the local endpoint, checking each MD5."""
        return retrieve_datasets(self.proj("globus_alias", "dataset_name").to_dicts(), overwrite=overwrite, into=into)

    @classmethod
    def discover(cls) -> "DiscoverReport":
        return discover_kind(KINDS[cls._kind], cls)


@schema
class ArchivedRawEphys(_ArchiveTable, dj.Imported):
    definition = """
    # a session's raw ephys (CatGT folder) in the archive
    -> ArchivedSession
    ---
    -> DataSet
    """
    _kind = EPHYS


@schema
class ArchivedTrackingVideo(_ArchiveTable, dj.Imported):
    definition = """
    # a session's raw tracking videos in the archive
    -> ArchivedSession
    ---
    -> DataSet
    """
    _kind = VIDEO


ARCHIVE_TABLES = {EPHYS: ArchivedRawEphys, VIDEO: ArchivedTrackingVideo}


def pending_sessions(dataset_type: str) -> list[dict]:
    """Sessions with raw files on the share that are not archived yet."""
    table = ARCHIVE_TABLES[dataset_type]
    return ((table().key_source) - table.proj()).to_dicts()


def publish_plan(dataset_types: Iterable[str] = (EPHYS, VIDEO)) -> list[dict]:
    """What publish would transfer: one entry per session and kind, with files and bytes."""
    plan = []
    for dataset_type in dataset_types:
        kind = KINDS[dataset_type]
        index = SessionIndex.load()
        files = share_raw_files(kind)
        archived = {(r["subject_id"], r["session"]) for r in ARCHIVE_TABLES[dataset_type].proj().to_dicts()}
        for day_key, fs in sorted(files.items()):
            session = index.by_day.get(day_key)
            if session is None or (session["subject_id"], session["session"]) in archived:
                continue
            plan.append({**session, "dataset_type": dataset_type, "dataset_name": fs[0]["dataset_name"],
                         "files": len(fs), "bytes": sum(f["size"] for f in fs), "paths": [f["path"] for f in fs]})
    return plan


# --------------------------------------------------------------------------- discover
@dataclasses.dataclass
class DiscoverReport:
    dataset_type: str
    registered: list[str] = dataclasses.field(default_factory=list)
    already: int = 0
    unmatched: list[str] = dataclasses.field(default_factory=list)  # archive folders with no known session

    def line(self) -> str:
        text = (f"discover {self.dataset_type}: {len(self.registered)} session(s) registered, "
                f"{self.already} already known")
        if self.unmatched:
            text += f", {len(self.unmatched)} archive folder(s) match no session: " + ", ".join(self.unmatched[:10])
        return text


def list_tree(backend: TransferBackend, endpoint: str, path: str) -> Iterator[tuple[str, int]]:
    """(relative path, size) of every file under ``path``; names from the listing are checked."""
    stack = [("", path)]
    while stack:
        rel, remote = stack.pop()
        for entry in backend.ls(endpoint, remote):
            name = validate_name(entry.name)  # refuses '..', '/', NUL...: nothing can leave the root
            child_rel = f"{rel}/{name}" if rel else name
            if entry.type == "dir":
                stack.append((child_rel, join_remote(remote, name)))
            else:
                yield child_rel, int(entry.size)


def archive_datasets(kind: ArchiveKind, backend: TransferBackend, location: StorageLocation) -> Iterator[tuple[str, tuple[str, str, int]]]:
    """(dataset_name, (h2o, day, k)) of the session folders under a location's root."""
    try:
        subjects = backend.ls(location.endpoint, location.root)
    except NotFound:
        return
    for h2o_entry in subjects:
        if h2o_entry.type != "dir":
            continue
        h2o = validate_name(h2o_entry.name)
        for folder in backend.ls(location.endpoint, join_remote(location.root, h2o)):
            name = f"{h2o}/{validate_name(folder.name)}"
            parsed = kind.parse_dataset(name) if folder.type == "dir" else None
            if parsed is not None and kind.dataset_name(*parsed) == name:
                yield name, parsed


def discover_kind(kind: ArchiveKind, table: type[dj.Table], settings: PublicationSettings | None = None) -> DiscoverReport:
    """Register data sets already in the archive for known sessions; transfers nothing."""
    settings = settings or PublicationSettings.from_config()
    sync_storage_locations(settings)
    location = settings.location(kind.location)
    backend = get_backend(settings)
    report = DiscoverReport(kind.dataset_type)
    index = SessionIndex.load()
    types = file_types(kind.dataset_type)
    for dataset_name, day_key in archive_datasets(kind, backend, location):
        session = index.by_day.get(day_key)
        if session is None:
            report.unmatched.append(dataset_name)
            continue
        if table & session or DataSet & {"globus_alias": location.name, "dataset_name": dataset_name}:
            report.already += 1
            continue
        rows = []
        for sub, size in sorted(list_tree(backend, location.endpoint, location.remote(dataset_name))):
            file_type = match_file_type(kind, sub, types)
            if file_type is not None:
                rows.append({"globus_alias": location.name, "dataset_name": dataset_name, "file_subpath": sub,
                             "file_type": file_type, "file_size": size, "file_md5": None})
        if not rows:
            continue
        with table.connection.transaction:
            record_archive(table, session, {"globus_alias": location.name, "dataset_name": dataset_name,
                                            "dataset_type": kind.dataset_type}, rows)
        report.registered.append(dataset_name)
    return report


def discover(dataset_types: Iterable[str] = (EPHYS, VIDEO)) -> list[DiscoverReport]:
    return [discover_kind(KINDS[t], ARCHIVE_TABLES[t]) for t in dataset_types]


# --------------------------------------------------------------------------- retrieve
class RetrieveError(TransferError):
    """Retrieved bytes that do not match the recorded checksum, or files we refused to overwrite."""


@dataclasses.dataclass
class RetrieveReport:
    dataset_name: str
    fetched: list[str] = dataclasses.field(default_factory=list)      # local paths written
    skipped: list[str] = dataclasses.field(default_factory=list)      # identical file already there
    conflicts: list[str] = dataclasses.field(default_factory=list)    # different file there, not overwritten
    bytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        text = (f"retrieve {self.dataset_name}: {len(self.fetched)} fetched ({self.bytes / 1e6:.1f} MB), "
                f"{len(self.skipped)} identical already there")
        if self.conflicts:
            text += f", {len(self.conflicts)} different file(s) left alone (use --overwrite)"
        return text


def _same_file(path: Path, size: int, md5: str | None) -> bool:
    return md5 is not None and path.stat().st_size == size and md5_file(path) == md5


def retrieve_dataset(alias: str, dataset_name: str, *, overwrite: bool = False, into: str | None = None,
                     settings: PublicationSettings | None = None) -> RetrieveReport:
    """Copy one data set from the archive to the local endpoint and verify every file's MD5."""
    started = time.perf_counter()
    settings = settings or PublicationSettings.from_config()
    location = settings.location(alias)
    subdir = settings.local_subdir(alias) if into is None else into.strip("/")
    report = RetrieveReport(dataset_name)
    files = (DataSet.PhysicalFile & {"globus_alias": alias, "dataset_name": dataset_name}).to_dicts()
    todo: list[tuple[dict, Path, TransferItem]] = []
    for f in sorted(files, key=lambda f: f["file_subpath"]):
        rel = "/".join(p for p in (subdir, dataset_name, f["file_subpath"]) if p)
        remote_dst = settings.endpoint.remote_path(rel)        # refuses '..' and the like
        local = settings.endpoint.local_file(rel)
        if local.exists():
            if _same_file(local, f["file_size"], f["file_md5"]):
                report.skipped.append(str(local))
                continue
            if not overwrite:
                report.conflicts.append(str(local))
                continue
        item = TransferItem(location.remote(dataset_name, f["file_subpath"]), remote_dst,
                            external_checksum=f["file_md5"])
        todo.append((f, local, item))
    if todo:
        backend = get_backend(settings)
        run_transfer(settings, backend, direction="retrieve", alias=alias, dataset_name=dataset_name,
                     source_endpoint=location.endpoint, destination_endpoint=settings.endpoint.endpoint,
                     items=[t[2] for t in todo], n_bytes=sum(t[0]["file_size"] for t in todo),
                     label=f"MAP retrieve {dataset_name}"[:128])
        for f, local, _ in todo:
            digest = md5_file(local)
            if f["file_md5"] is None:  # registered by discover(): now we know it
                DataSet.PhysicalFile.update1({k: f[k] for k in ("globus_alias", "dataset_name", "file_subpath")}
                                             | {"file_md5": digest})
            elif digest != f["file_md5"]:
                raise RetrieveError(f"{local}: retrieved bytes have MD5 {digest}, the archive record says "
                                    f"{f['file_md5']}")
            report.fetched.append(str(local))
            report.bytes += f["file_size"]
    report.seconds = time.perf_counter() - started
    return report


def retrieve_datasets(datasets: Iterable[Mapping[str, Any]], *, overwrite: bool = False,
                      into: str | None = None) -> list[RetrieveReport]:
    """Retrieve each data set (dicts with globus_alias, dataset_name). Different local files are
    never overwritten unless ``overwrite``: they are listed and RetrieveError is raised at the end."""
    settings = PublicationSettings.from_config()
    seen, reports = set(), []
    for d in datasets:
        key = (d["globus_alias"], d["dataset_name"])
        if key in seen:
            continue
        seen.add(key)
        reports.append(retrieve_dataset(*key, overwrite=overwrite, into=into, settings=settings))
    conflicts = [c for r in reports for c in r.conflicts]
    if conflicts:
        err = RetrieveError(
            f"{len(conflicts)} local file(s) differ from the archive and were left alone (pass overwrite=True "
            f"to replace them): " + ", ".join(conflicts[:10]))
        err.reports = reports  # type: ignore[attr-defined]
        raise err
    return reports


# --------------------------------------------------------------------------- publish, status
def publish(dataset_types: Iterable[str] = (EPHYS, VIDEO), restriction: Any = None, *, progress: bool = False):
    """Populate the archive tables with job reservation; returns one summary per table.

    Errors of earlier runs are cleared first so failed transfers are tried again.
    """
    from ingest.runner import run_ingest
    from pipeline.jobs import clear_errors

    summaries = []
    for dataset_type in dataset_types:
        table = ARCHIVE_TABLES[dataset_type]
        clear_errors(table)
        if restriction is None:
            summaries.append(run_ingest(table, progress=progress))
        else:
            result = table().populate(restriction, reserve_jobs=True, suppress_errors=True, display_progress=progress)
            from ingest.runner import IngestSummary

            summary = IngestSummary(table.__name__, inserted=result["success_count"],
                                    errors=[str(m) for _, m in result["error_list"]])
            summary.failed = len(summary.errors)
            summaries.append(summary)
    return summaries


def status_lines() -> list[str]:
    """What is archived, pending (on the share, not archived) and failed (last task failed)."""
    lines = []
    for dataset_type, table in ARCHIVE_TABLES.items():
        archived = len(table())
        nbytes = sum(int(s) for s in (DataSet.PhysicalFile & (DataSet & {"dataset_type": dataset_type})).to_arrays("file_size"))
        pending = pending_sessions(dataset_type)
        lines.append(f"{dataset_type}: {archived} session(s) archived ({nbytes / 1e6:.1f} MB), "
                     f"{len(pending)} pending on the share")
    tasks = TransferTask().to_dicts()
    latest: dict[tuple[str, str, str], dict] = {}
    for t in sorted(tasks, key=lambda t: t["submitted"]):
        latest[(t["direction"], t["globus_alias"], t["dataset_name"])] = t
    archived_sets = {(r["globus_alias"], r["dataset_name"]) for r in DataSet.proj().to_dicts()}
    for (direction, alias, name), t in sorted(latest.items()):
        if t["status"] in ("SUBMITTING", "ACTIVE"):
            lines.append(f"  in progress: {direction} {alias}:{name} task {t['task_id']} ({t['status']}, "
                         f"submitted {t['submitted']})")
        elif t["status"] == "FAILED" and (direction == "retrieve" or (alias, name) not in archived_sets):
            lines.append(f"  failed: {direction} {alias}:{name} task {t['task_id']} at {t['completed']}: {t['faults']}")
    return lines

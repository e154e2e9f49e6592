"""Share discovery: a record, in the database, of every file on the configured rig shares.

MAP walked the whole share on every populate call. Here a scan records each file (path relative
to its root, size, modification time); a re-scan writes only what is new, changed or gone, and
ingest tables take their keys from the record, so populate never walks the share. A file that
vanished stays recorded as vanished; folders that cannot be read are recorded as problems.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import Callable, Iterable, Iterator, NamedTuple

import datajoint as dj

from pipeline import bulk
from pipeline import config as _config
from pipeline.db import schema as _schema

schema = _schema("ingest_share")

# config key -> data kind
DATA_KINDS = {
    "behavior": "behavior_data_paths",
    "tracking": "tracking_data_paths",
    "ephys": "ephys_data_paths",
    "video": "video_data_paths",
    "histology": "histology_data_paths",
}


NEW_FILE_COLUMNS = ("root_hash", "file_hash", "relpath", "dir_hash", "size", "mtime", "status", "first_seen")


def path_hash(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()


@schema
class ShareRoot(dj.Manual):
    definition = """
    # a configured share root: rig files of one kind under one folder
    root_hash : char(32)             # MD5 of data kind and absolute path
    ---
    data_kind : enum('behavior','tracking','ephys','video','histology')
    rig : varchar(24)
    root_path : varchar(1024)
    root_order : int32
    last_scan = null : datetime
    """


@schema
class ShareFile(dj.Manual):
    definition = """
    # a file seen on a share; vanished files stay, marked as such
    -> ShareRoot
    file_hash : char(32)             # MD5 of relpath
    ---
    relpath : varchar(1024)          # path relative to the root, '/'-separated
    dir_hash : char(32)              # MD5 of the folder part of relpath (see ShareDir)
    size : int64                     # bytes
    mtime : float64                  # modification time (s since the epoch)
    status : enum('present','vanished')
    first_seen : datetime
    changed = null : datetime        # last time a scan saw its size or mtime change
    index (status)
    """


@schema
class ShareDir(dj.Manual):
    definition = """
    # a folder's fingerprint at the last scan: a re-scan compares files only in folders whose
    # fingerprint (names, sizes, modification times of the files directly in it) changed
    -> ShareRoot
    dir_hash : char(32)              # MD5 of reldir
    ---
    reldir : varchar(1024)           # folder relative to the root ('' for the root itself)
    fingerprint : char(32)
    n_files : int32
    """


@schema
class ScanProblem(dj.Manual):
    definition = """
    # something under a share root that the last scan could not read
    -> ShareRoot
    problem_hash : char(32)          # MD5 of relpath
    ---
    relpath : varchar(1024)
    problem : varchar(1000)
    seen : datetime
    """


class FileStat(NamedTuple):
    relpath: str
    size: int
    mtime: float


@dataclass
class RootReport:
    data_kind: str
    rig: str
    root: str
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    unchanged: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def present(self) -> int:
        return len(self.new) + len(self.changed) + self.unchanged


def iter_folders(root: Path, problems: list[tuple[str, str]]) -> Iterator[tuple[str, list[FileStat]]]:
    """Yield (folder relative to root, its regular files) for every folder under ``root``
    (following folder links once); what cannot be read is appended to ``problems``."""
    seen_dirs: set[tuple[int, int]] = set()
    stack = [(str(root), "")]
    while stack:
        folder, rel = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:
                problems.append((rel, "folder link loop: already scanned through another path"))
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except OSError as err:
            problems.append((rel or ".", f"cannot read folder: {err.strerror or err}"))
            continue
        files = []
        prefix = f"{rel}/" if rel else ""
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, prefix + entry.name))
                    continue
                st = entry.stat(follow_symlinks=False)
                if S_ISREG(st.st_mode):
                    files.append(FileStat(prefix + entry.name, st.st_size, st.st_mtime))
                elif S_ISLNK(st.st_mode):
                    target = os.stat(entry.path)  # raises for dangling links and loops
                    if S_ISDIR(target.st_mode):
                        stack.append((entry.path, prefix + entry.name))
                    elif S_ISREG(target.st_mode):
                        files.append(FileStat(prefix + entry.name, target.st_size, target.st_mtime))
            except OSError as err:
                problems.append((prefix + entry.name, f"cannot read: {err.strerror or err}"))
        yield rel, files


def walk_share(root: Path) -> tuple[dict[str, list[FileStat]], list[tuple[str, str]]]:
    """Every regular file under ``root`` grouped by folder, and what could not be read."""
    problems: list[tuple[str, str]] = []
    folders = dict(iter_folders(root, problems))
    return folders, problems


EMPTY_FOLDER = hashlib.md5(b"").hexdigest()  # the fingerprint of a folder with no files (or gone)


def fingerprint(files: list[FileStat]) -> str:
    text = "\n".join(f"{f.relpath}\t{f.size}\t{f.mtime!r}" for f in sorted(files))
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()


def configured_roots(cfg: _config.PipelineConfig, kinds: Iterable[str]) -> list[dict]:
    """ShareRoot rows for the configured ``*_data_paths`` of these kinds."""
    rows = []
    for kind in kinds:
        for rig, path, order in cfg.data_paths(DATA_KINDS[kind]):
            absolute = str(Path(path).expanduser().resolve())
            rows.append(dict(root_hash=path_hash(f"{kind}:{absolute}"), data_kind=kind, rig=rig,
                             root_path=absolute, root_order=order))
    return rows


def _now() -> dt.datetime:
    return dt.datetime.now().replace(microsecond=0)


def scan_root(root: dict) -> RootReport:
    """Bring the record of one root up to date with what is on disk, in one transaction.

    Folders are compared by fingerprint; only folders whose fingerprint changed are compared
    file by file. Files of folders never seen before are all new: they are sent to the database
    by a background thread while the walk goes on, so the first scan of a large share costs
    about the walk or the database writes, whichever is longer, not their sum.
    """
    started = time.perf_counter()
    report = RootReport(root["data_kind"], root["rig"], root["root_path"])
    key = {"root_hash": root["root_hash"]}
    recorded = {reldir: (dir_hash, fp) for dir_hash, reldir, fp in bulk.select_rows(ShareDir, ("dir_hash", "reldir", "fingerprint"), key)}
    now = _now()
    prints: dict[str, tuple[str, int]] = {}
    differing: dict[str, list[FileStat]] = {}
    problems: list[tuple[str, str]] = []
    with ShareFile.connection.transaction:
        with bulk.BackgroundInserter(ShareFile, NEW_FILE_COLUMNS) as inserter:
            for reldir, files in iter_folders(Path(root["root_path"]), problems):
                fp = fingerprint(files)
                prints[reldir] = (fp, len(files))
                if reldir not in recorded:  # a folder never seen: every file in it is new
                    dir_hash = path_hash(reldir)
                    inserter.put([(root["root_hash"], path_hash(f.relpath), f.relpath, dir_hash, f.size, f.mtime, "present", now)
                                  for f in files])
                    report.new += [f.relpath for f in files]
                elif recorded[reldir][1] != fp:
                    differing[reldir] = files
                else:
                    report.unchanged += len(files)
        report.problems = problems
        for reldir in recorded:
            if reldir not in prints and recorded[reldir][1] != EMPTY_FOLDER:  # a folder that vanished
                differing[reldir] = []
                prints[reldir] = (EMPTY_FOLDER, 0)
        _compare_files(root, differing, report, now)
        bulk.delete_where_in(ShareDir, key, "dir_hash", [recorded[d][0] for d in differing if d in recorded])
        bulk.insert_rows(ShareDir, ("root_hash", "dir_hash", "reldir", "fingerprint", "n_files"),
                         [(root["root_hash"], path_hash(d), d, fp, n) for d, (fp, n) in prints.items()
                          if d not in recorded or d in differing])
        (ScanProblem & key).delete_quick()
        if problems:
            ScanProblem.insert([dict(key, problem_hash=path_hash(rel), relpath=rel, problem=reason[:1000], seen=now)
                                for rel, reason in dict(problems).items()])
        ShareRoot.update1(dict(key, last_scan=now))
    report.seconds = time.perf_counter() - started
    return report


def _compare_files(root: dict, differing: dict[str, list[FileStat]], report: RootReport, now: dt.datetime) -> None:
    """File-by-file comparison of the folders whose fingerprint changed (or that vanished)."""
    if not differing:
        return
    key = {"root_hash": root["root_hash"]}
    hashes = {path_hash(d): d for d in differing}
    known = {rel: (size, mtime, status) for dh, rel, size, mtime, status
             in bulk.select_rows(ShareFile, ("dir_hash", "relpath", "size", "mtime", "status"), key) if dh in hashes}
    new_rows = []
    for reldir, files in differing.items():
        dir_hash = path_hash(reldir)
        for f in files:
            have = known.pop(f.relpath, None)
            if have is None:
                new_rows.append((root["root_hash"], path_hash(f.relpath), f.relpath, dir_hash, f.size, f.mtime, "present", now))
                report.new.append(f.relpath)
            elif have[0] != f.size or abs(have[1] - f.mtime) > 1e-6 or have[2] != "present":
                ShareFile.update1(dict(key, file_hash=path_hash(f.relpath), size=f.size, mtime=f.mtime, status="present", changed=now))
                report.changed.append(f.relpath)
            else:
                report.unchanged += 1
    bulk.insert_rows(ShareFile, NEW_FILE_COLUMNS, new_rows)
    report.vanished = sorted(rel for rel, (_, _, status) in known.items() if status == "present")
    bulk.update_where_in(ShareFile, {"status": "vanished", "changed": now}, key, "file_hash",
                         [path_hash(rel) for rel in report.vanished])


# Called after each root is scanned, by data kind: ingest modules register how they turn new
# or changed files into keys of their own (e.g. Bpod file names into behaviour sessions).
AFTER_SCAN: dict[str, list[Callable[[dict, RootReport], None]]] = {}


def after_scan(kind: str):
    def register(fn: Callable[[dict, RootReport], None]):
        AFTER_SCAN.setdefault(kind, []).append(fn)
        return fn

    return register


def scan(kinds: Iterable[str], cfg: _config.PipelineConfig | None = None) -> list[RootReport]:
    """Scan every configured root of these kinds; returns one report per root."""
    cfg = cfg or _config.active()
    reports = []
    for root in configured_roots(cfg, kinds):
        if not Path(root["root_path"]).is_dir():
            raise _config.ConfigError(
                f"{root['data_kind']} share {root['root_path']} (key custom.{DATA_KINDS[root['data_kind']]}) "
                "does not exist or is not a folder"
            )
        ShareRoot.insert1(root, skip_duplicates=True)
        report = scan_root(root)
        for hook in AFTER_SCAN.get(root["data_kind"], []):
            hook(root, report)
        reports.append(report)
    return reports


def present_files(kind: str) -> Iterator[dict]:
    """Every present file of a kind, with its absolute path."""
    rows = (ShareRoot * ShareFile & {"data_kind": kind, "status": "present"}).to_dicts()
    for row in rows:
        row["path"] = Path(row["root_path"]) / row["relpath"]
        yield row

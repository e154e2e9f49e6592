"""A local "endpoint": each collection id is a directory, with Globus task semantics.

Used by the demo, the tests and labs without Globus.  Tasks outlive the process
that submits them, as real Globus tasks do:

* every task is a JSON record ``<state_dir>/tasks/<task_id>.json``, rewritten
  atomically (temp file + ``os.replace``) by exactly one writer at a time;
* ``<state_dir>/submissions/<submission_id>`` is created with ``os.link`` (atomic,
  fails if present), so the same submission id always maps to the same task and
  a retried submit never starts a second copy;
* the copy runs in a detached worker (``python -m pipeline.transfer.local_worker``,
  new session).  The worker holds an ``flock`` on ``<state_dir>/locks/<task_id>``,
  taken by the submitter *before* the record is written and handed over as an
  inherited file descriptor, so the lock is held from submission until the worker
  exits, whoever dies first;
* a reader that finds a task ACTIVE but can take that lock knows the worker died
  without finishing: the task is marked FAILED (fault ``WORKER_DIED``) and the
  temporary file it was writing is removed.  Dead tasks are *not* resumed: submit
  again with a new submission id and ``sync_level='checksum'`` to skip files
  already in place.

Copies are written to a hidden temporary name in the destination folder and
renamed into place only when complete and checksum-verified (see local_worker).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

try:  # POSIX only: the local backend's task locks are flock()s
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .base import (
    AlreadyExists,
    Entry,
    NotFound,
    PathEscapeError,
    TaskStatus,
    TransferBackend,
    TransferError,
    TransferItem,
    check_sync_level,
    normalize_remote_path,
    path_parts,
)

log = logging.getLogger(__name__)

_SUBMISSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- helpers
def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON so readers see either the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def resolve_in_root(root: Path, remote_path: str) -> Path:
    """Map a collection path onto ``root`` and refuse anything resolving outside it.

    ``root`` must already be resolved.  The returned path is not resolved (so a
    symlink inside the collection can itself be renamed/deleted), but its real
    location, following every symlink, is checked to lie under ``root``.
    """
    candidate = root.joinpath(*path_parts(remote_path))
    real = Path(os.path.realpath(candidate))
    if real != root and not real.is_relative_to(root):
        raise PathEscapeError(
            f"{remote_path!r} resolves outside its collection (to {real}); refusing"
        )
    return candidate


def fault(code: str, description: str) -> dict[str, str]:
    return {"code": code, "description": description, "time": now_iso()}


def status_from_record(rec: Mapping[str, Any]) -> TaskStatus:
    faults = tuple(f"{f['code']}: {f['description']}" for f in rec.get("faults", []))
    fatal = rec.get("fatal_error")
    return TaskStatus(
        task_id=rec["task_id"],
        status=rec["status"],
        nice_status=rec.get("nice_status"),
        files=int(rec.get("files", 0)),
        files_transferred=int(rec.get("files_transferred", 0)),
        bytes_transferred=int(rec.get("bytes_transferred", 0)),
        faults=faults,
        fatal_error=f"{fatal['code']}: {fatal['description']}" if fatal else None,
        label=rec.get("label"),
        files_skipped=int(rec.get("files_skipped", 0)),
    )


def _entry_for(path: Path, name: str) -> Entry:
    st = path.stat()  # follows symlinks: confinement was checked by the caller
    is_dir = os.path.isdir(path)
    return Entry(
        name=name,
        type="dir" if is_dir else "file",
        size=0 if is_dir else st.st_size,
        mtime=st.st_mtime,
    )


class StateDir:
    """Paths of the task-state directory (shared with the worker)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tasks = self.root / "tasks"
        self.submissions = self.root / "submissions"
        self.locks = self.root / "locks"
        self.logs = self.root / "logs"

    def ensure(self) -> "StateDir":
        for d in (self.tasks, self.submissions, self.locks, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def task(self, task_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f-]{36}", task_id or ""):
            raise NotFound(f"no such task {task_id!r}")
        return self.tasks / f"{task_id}.json"

    def lock(self, task_id: str) -> Path:
        return self.locks / task_id

    def log(self, task_id: str) -> Path:
        return self.logs / f"{task_id}.log"


# --------------------------------------------------------------------------- backend
class LocalBackend(TransferBackend):
    """Collections are directories: ``{collection_id: directory}``.

    :param collections: collection/endpoint id -> local directory
    :param state_dir: where task records, submission ids and worker logs live;
        must be shared by every process that wants to see the same tasks
    :param max_bytes_per_second: optional copy bandwidth cap, to spare a rig disk
    :param python: interpreter used for the detached workers
    """

    def __init__(
        self,
        collections: Mapping[str, str | os.PathLike[str]],
        state_dir: str | os.PathLike[str],
        *,
        max_bytes_per_second: float | None = None,
        python: str = sys.executable,
    ) -> None:
        if fcntl is None:
            raise TransferError("the local transfer backend needs a POSIX system (fcntl); use Globus")
        self.collections = {str(k): Path(v).expanduser().resolve() for k, v in collections.items()}
        self.state = StateDir(state_dir).ensure()
        self.max_bytes_per_second = max_bytes_per_second
        self.python = python

    # -- paths
    def root(self, endpoint: str) -> Path:
        try:
            root = self.collections[str(endpoint)]
        except KeyError:
            raise NotFound(f"unknown local collection {endpoint!r}") from None
        if not root.is_dir():
            raise NotFound(f"directory of local collection {endpoint!r} is missing: {root}")
        return root

    def local_path(self, endpoint: str, path: str) -> Path:
        """The confined filesystem path for ``endpoint:path``."""
        return resolve_in_root(self.root(endpoint), path)

    # -- synchronous file operations
    def ls(self, endpoint: str, path: str) -> list[Entry]:
        target = self.local_path(endpoint, path)
        root = self.root(endpoint)
        if not target.exists():
            raise NotFound(f"{endpoint}:{normalize_remote_path(path)} does not exist")
        if not target.is_dir():
            raise TransferError(f"{endpoint}:{normalize_remote_path(path)} is not a directory")
        entries = []
        for child in sorted(os.scandir(target), key=lambda e: e.name):
            child_path = Path(child.path)
            real = Path(os.path.realpath(child_path))
            if real != root and not real.is_relative_to(root):
                log.warning("not listing %s: symlink points outside the collection", child_path)
                continue
            if not child_path.exists():  # dangling symlink
                continue
            entries.append(_entry_for(child_path, child.name))
        return entries

    def stat(self, endpoint: str, path: str) -> Entry | None:
        target = self.local_path(endpoint, path)
        if not target.exists():
            return None
        parts = path_parts(path)
        return _entry_for(target, parts[-1] if parts else "/")

    def mkdir(self, endpoint: str, path: str) -> None:
        target = self.local_path(endpoint, path)
        try:
            target.mkdir()
        except FileExistsError:
            raise AlreadyExists(f"{endpoint}:{normalize_remote_path(path)} already exists") from None
        except FileNotFoundError:
            raise NotFound(f"parent of {endpoint}:{normalize_remote_path(path)} does not exist") from None

    def rename(self, endpoint: str, old: str, new: str) -> None:
        src = self.local_path(endpoint, old)
        dst = self.local_path(endpoint, new)
        if not os.path.lexists(src):
            raise NotFound(f"{endpoint}:{normalize_remote_path(old)} does not exist")
        if os.path.lexists(dst):
            raise AlreadyExists(f"{endpoint}:{normalize_remote_path(new)} already exists")
        if not dst.parent.is_dir():
            raise NotFound(f"parent of {endpoint}:{normalize_remote_path(new)} does not exist")
        os.rename(src, dst)

    # -- tasks
    def submission_id(self) -> str:
        return str(uuid.uuid4())

    def delete(
        self, endpoint: str, paths: Sequence[str], recursive: bool = False, *, label: str | None = None
    ) -> str:
        """Run the delete inline (it is quick) and record it as a finished task."""
        targets = [(p, self.local_path(endpoint, p)) for p in paths]
        rec: dict[str, Any] = {
            "task_id": str(uuid.uuid4()),
            "type": "DELETE",
            "label": label,
            "endpoint": endpoint,
            "request_time": now_iso(),
            "files": len(targets),
            "faults": [],
        }
        error = None
        for remote, target in targets:
            if not os.path.lexists(target):
                error = fault("FILE_NOT_FOUND", f"{endpoint}:{remote} does not exist")
                break
            if target.is_dir() and not target.is_symlink():
                if not recursive:
                    error = fault("NOT_RECURSIVE", f"{endpoint}:{remote} is a directory and recursive is False")
                    break
                shutil.rmtree(target)
            else:
                target.unlink()
        rec.update(
            status="FAILED" if error else "SUCCEEDED",
            nice_status=error["code"] if error else None,
            faults=[error] if error else [],
            fatal_error=error,
            completion_time=now_iso(),
        )
        write_json_atomic(self.state.task(rec["task_id"]), rec)
        return rec["task_id"]

    def submit_transfer(
        self,
        source_endpoint: str,
        destination_endpoint: str,
        items: Iterable[TransferItem],
        *,
        submission_id: str,
        label: str | None = None,
        sync_level: str | None = None,
        verify_checksum: bool = True,
    ) -> str:
        items = list(items)
        if not items:
            raise TransferError("a transfer needs at least one item")
        if not submission_id or not _SUBMISSION_ID_RE.match(submission_id):
            raise TransferError(f"invalid submission_id {submission_id!r}")
        level = check_sync_level(sync_level)
        src_root, dst_root = self.root(source_endpoint), self.root(destination_endpoint)
        for item in items:  # refuse escapes now; the worker checks again before use
            resolve_in_root(src_root, item.source_path)
            resolve_in_root(dst_root, item.destination_path)

        marker = self.state.submissions / submission_id
        if marker.exists():
            return marker.read_text().strip()

        task_id = str(uuid.uuid4())
        lock_fd = os.open(self.state.lock(task_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            rec = {
                "task_id": task_id,
                "type": "TRANSFER",
                "submission_id": submission_id,
                "label": label,
                "status": "ACTIVE",
                "nice_status": "Queued",
                "request_time": now_iso(),
                "source_endpoint": source_endpoint,
                "destination_endpoint": destination_endpoint,
                "source_root": str(src_root),
                "destination_root": str(dst_root),
                "items": [
                    {
                        "source_path": normalize_remote_path(i.source_path),
                        "destination_path": normalize_remote_path(i.destination_path),
                        "recursive": i.recursive,
                        "external_checksum": i.external_checksum,
                        "checksum_algorithm": i.checksum_algorithm,
                    }
                    for i in items
                ],
                "sync_level": level,
                "verify_checksum": verify_checksum,
                "max_bytes_per_second": self.max_bytes_per_second,
                "files": 0,
                "files_transferred": 0,
                "files_skipped": 0,
                "bytes_transferred": 0,
                "faults": [],
                "fatal_error": None,
                "in_progress_tmp": None,
            }
            write_json_atomic(self.state.task(task_id), rec)
            tmp_marker = marker.with_name(f".{submission_id}.{task_id}")
            tmp_marker.write_text(task_id)
            try:
                os.link(tmp_marker, marker)
            except FileExistsError:  # lost a race with another submitter
                self.state.task(task_id).unlink()
                self.state.lock(task_id).unlink(missing_ok=True)
                return marker.read_text().strip()
            finally:
                tmp_marker.unlink(missing_ok=True)
            self._spawn_worker(task_id, lock_fd)
        finally:
            os.close(lock_fd)  # the worker keeps its inherited copy of the lock
        return task_id

    def _spawn_worker(self, task_id: str, lock_fd: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p
        )
        with open(self.state.log(task_id), "ab") as log_fh:
            proc = subprocess.Popen(
                [
                    self.python, "-m", "pipeline.transfer.local_worker",
                    "--state-dir", str(self.state.root),
                    "--task-id", task_id,
                    "--lock-fd", str(lock_fd),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=log_fh,
                pass_fds=(lock_fd,),
                start_new_session=True,  # not killed with the submitter's terminal/session
                env=env,
                cwd=str(self.state.root),
            )
        log.debug("started worker pid %s for task %s", proc.pid, task_id)

    def task_status(self, task_id: str) -> TaskStatus:
        path = self.state.task(task_id)
        try:
            rec = read_json(path)
        except FileNotFoundError:
            raise NotFound(f"no such task {task_id!r}") from None
        if rec["status"] == "ACTIVE":
            rec = self._reap_if_dead(task_id, rec)
        return status_from_record(rec)

    def _reap_if_dead(self, task_id: str, rec: dict[str, Any]) -> dict[str, Any]:
        """If nobody holds the task lock, its worker is gone: mark the task FAILED."""
        try:
            fd = os.open(self.state.lock(task_id), os.O_RDWR)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return rec  # worker alive (or another reader reaping right now)
            rec = read_json(self.state.task(task_id))  # it may have finished meanwhile
            if rec["status"] != "ACTIVE":
                return rec
            tmp = rec.get("in_progress_tmp")
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            tail = ""
            try:
                lines = self.state.log(task_id).read_text(errors="replace").strip().splitlines()
                tail = (" Worker log: " + " | ".join(lines[-3:])) if lines else ""
            except OSError:
                pass
            err = fault(
                "WORKER_DIED",
                "the worker process for this task exited without finishing (killed or "
                "crashed); its partial file was removed. Resubmit with a new submission "
                f"id and sync_level='checksum' to complete it.{tail}",
            )
            rec.update(
                status="FAILED",
                nice_status="WORKER_DIED",
                fatal_error=err,
                faults=[*rec.get("faults", []), err],
                in_progress_tmp=None,
                completion_time=now_iso(),
            )
            write_json_atomic(self.state.task(task_id), rec)
            return rec
        finally:
            if fd is not None:
                os.close(fd)

    def wait(self, task_id: str, *, timeout: float = 3600, poll_interval: float = 10) -> TaskStatus:
        deadline = time.monotonic() + timeout
        interval = max(0.02, poll_interval)
        while True:
            status = self.task_status(task_id)
            if status.status != "ACTIVE" or time.monotonic() >= deadline:
                return status
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    # -- introspection (used by tests and the demo)
    def task_ids(self) -> list[str]:
        return sorted(p.stem for p in self.state.tasks.glob("*.json"))

    def task_record(self, task_id: str) -> dict[str, Any]:
        return read_json(self.state.task(task_id))

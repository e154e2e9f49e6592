"""The transfer backend interface, its small value types and its typed errors.

Everything above this module (publication tables, mapshell, notebooks) talks to a
``TransferBackend`` only, so the same archive code runs against Globus (``globus.py``)
or against plain directories (``local.py``) in the demo, in tests and in labs
without Globus.  Remote paths are always POSIX-style and rooted at the collection
(``/4ElectrodeRig_Ephys/SC022/...``); the helpers here are the single place where
such paths are checked, so every backend refuses the same tricks.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Iterable, Literal, Sequence

EntryType = Literal["file", "dir"]
TaskState = Literal["ACTIVE", "SUCCEEDED", "FAILED", "INACTIVE"]
SyncLevel = Literal["exists", "size", "mtime", "checksum"]

SYNC_LEVELS: dict[str, int] = {"exists": 0, "size": 1, "mtime": 2, "checksum": 3}
LOGIN_HINT = "run `mapshell publication-login` to log in to Globus again"


# --------------------------------------------------------------------------- errors
class TransferError(Exception):
    """Base class of every error raised by the transfer layer."""


class PathEscapeError(TransferError):
    """A remote path or name that would leave the collection root ('..', '/' tricks,
    symlinks pointing outside)."""


class NotFound(TransferError):
    """The endpoint, path or task does not exist."""


class AlreadyExists(TransferError):
    """mkdir/rename target already exists."""


class AuthError(TransferError):
    """Missing, expired or insufficient credentials.

    The message always says what to do; by default that is the login command.
    Messages never contain token values.
    """

    def __init__(self, message: str, *, hint: str | None = LOGIN_HINT) -> None:
        full = f"{message}; {hint}" if hint and hint not in message else message
        super().__init__(full)


class TaskFailed(TransferError):
    """A task that did not end in SUCCEEDED (raised by the manager, carries the status)."""

    def __init__(self, status: "TaskStatus", message: str | None = None) -> None:
        self.status = status
        if message is None:
            faults = "; ".join(status.faults) or status.fatal_error or "no fault reported"
            message = (
                f"transfer task {status.task_id} ({status.label or 'no label'}) ended "
                f"{status.status}: {faults}"
            )
        super().__init__(message)


# --------------------------------------------------------------------------- values
@dataclasses.dataclass(frozen=True)
class Entry:
    """One item of a directory listing. ``mtime`` is POSIX seconds (UTC) or None."""

    name: str
    type: EntryType
    size: int
    mtime: float | None = None


@dataclasses.dataclass(frozen=True)
class TransferItem:
    """One file (or, with recursive=True, one directory) to copy.

    ``external_checksum`` is the checksum recorded before archiving; the backend
    verifies the copied bytes against it.
    """

    source_path: str
    destination_path: str
    recursive: bool = False
    external_checksum: str | None = None
    checksum_algorithm: str = "MD5"

    def __post_init__(self) -> None:
        if self.recursive and self.external_checksum:
            raise TransferError(
                f"external_checksum cannot be given for a recursive item ({self.source_path})"
            )


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    """Status of an asynchronous task, shaped like Globus ``get_task``.

    ``faults`` holds human-readable fault descriptions (event list for Globus).
    Success means ``status == 'SUCCEEDED'`` and nothing else.
    """

    task_id: str
    status: TaskState
    nice_status: str | None = None
    files: int = 0
    files_transferred: int = 0
    bytes_transferred: int = 0
    faults: tuple[str, ...] = ()
    fatal_error: str | None = None
    label: str | None = None
    files_skipped: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def done(self) -> bool:
        """True once the task will not change any more (SUCCEEDED or FAILED)."""
        return self.status in ("SUCCEEDED", "FAILED")


# --------------------------------------------------------------------------- paths
def normalize_remote_path(path: str) -> str:
    """Return the canonical form of a collection path, or raise PathEscapeError.

    Paths must be absolute *within the collection* (start with '/'); '.' and empty
    components are dropped, and any '..' component is refused outright rather
    than resolved, so no spelling can climb above the collection root.
    """
    if not isinstance(path, str) or not path:
        raise PathEscapeError(f"empty or non-string remote path: {path!r}")
    if "\x00" in path or "\\" in path:
        raise PathEscapeError(f"remote path contains NUL or backslash: {path!r}")
    if not path.startswith("/"):
        raise PathEscapeError(
            f"remote path must start with '/' (relative to the collection root): {path!r}"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathEscapeError(f"remote path contains '..': {path!r}")
    return "/" + "/".join(parts)


def path_parts(path: str) -> list[str]:
    """Components of a normalized remote path ('/' -> [])."""
    return [p for p in normalize_remote_path(path).split("/") if p]


def validate_name(name: str) -> str:
    """Check a single directory-entry name (e.g. one returned by a remote listing)."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
    ):
        raise PathEscapeError(f"refusing unsafe entry name {name!r}")
    return name


def join_remote(directory: str, name: str) -> str:
    """Join a validated name onto a remote directory path."""
    base = normalize_remote_path(directory)
    return (base.rstrip("/") or "") + "/" + validate_name(name)


# --------------------------------------------------------------------------- interface
class TransferBackend(abc.ABC):
    """Globus-shaped operations on collections identified by endpoint/collection id.

    File operations (ls/stat/mkdir/rename) are synchronous; ``delete`` and
    ``submit_transfer`` create asynchronous tasks, identified by a task id, whose
    outcome is read with ``task_status`` / ``wait``.
    """

    @abc.abstractmethod
    def ls(self, endpoint: str, path: str) -> list[Entry]:
        """List a directory. NotFound if it does not exist."""

    @abc.abstractmethod
    def stat(self, endpoint: str, path: str) -> Entry | None:
        """Entry for one path, or None if nothing is there."""

    @abc.abstractmethod
    def mkdir(self, endpoint: str, path: str) -> None:
        """Create one directory (parent must exist). AlreadyExists if present."""

    @abc.abstractmethod
    def rename(self, endpoint: str, old: str, new: str) -> None:
        """Rename within one collection. AlreadyExists if ``new`` exists."""

    @abc.abstractmethod
    def delete(
        self, endpoint: str, paths: Sequence[str], recursive: bool = False, *, label: str | None = None
    ) -> str:
        """Submit a delete task; returns its task id."""

    @abc.abstractmethod
    def submission_id(self) -> str:
        """A fresh id to store *before* submitting, so a retry cannot double-submit."""

    @abc.abstractmethod
    def submit_transfer(
        self,
        source_endpoint: str,
        destination_endpoint: str,
        items: Iterable[TransferItem],
        *,
        submission_id: str,
        label: str | None = None,
        sync_level: SyncLevel | None = None,
        verify_checksum: bool = True,
    ) -> str:
        """Submit one transfer task; the same submission_id always yields the same task."""

    @abc.abstractmethod
    def task_status(self, task_id: str) -> TaskStatus:
        """Current status of a task (faults included when FAILED)."""

    @abc.abstractmethod
    def wait(self, task_id: str, *, timeout: float = 3600, poll_interval: float = 10) -> TaskStatus:
        """Poll until the task leaves ACTIVE or ``timeout`` seconds pass.

        Returns the last status seen: check ``.status == 'SUCCEEDED'``; a task still
        ACTIVE after the timeout is returned as such, never as success.
        """


def check_sync_level(sync_level: str | None) -> int | None:
    """Validate a sync level name and return its Globus integer (or None)."""
    if sync_level is None:
        return None
    try:
        return SYNC_LEVELS[sync_level]
    except KeyError:
        raise TransferError(
            f"unknown sync_level {sync_level!r}; expected one of {sorted(SYNC_LEVELS)}"
        ) from None

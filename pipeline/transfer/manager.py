"""``GlobusStorageManager``: the MAP-style facade over any TransferBackend.

MAP users write remote locations as ``endpoint_id:/path`` and expect ls / mkdir /
rm / cp / rename / fts.  Here every asynchronous operation waits for its task
and raises ``TaskFailed`` unless the task SUCCEEDED, so callers cannot mistake a
failed copy for a good one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Iterator

from .base import (
    Entry,
    TaskFailed,
    TaskStatus,
    TransferBackend,
    TransferError,
    TransferItem,
    join_remote,
    normalize_remote_path,
)

log = logging.getLogger(__name__)
MD5_CHUNK = 8 * 1024 * 1024


def md5_file(path: str | os.PathLike[str], chunk_size: int = MD5_CHUNK) -> str:
    """Hex MD5 of a local file, streamed in 8 MiB chunks (recorded before archiving)."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def split_location(location: str) -> tuple[str, str]:
    """``'endpoint:/a/b'`` -> ``('endpoint', '/a/b')`` with the path checked."""
    endpoint, sep, path = location.partition(":")
    if not sep or not endpoint or not path:
        raise TransferError(f"expected 'endpoint_id:/path', got {location!r}")
    return endpoint, normalize_remote_path(path)


class GlobusStorageManager:
    """MAP's storage manager on top of a backend (Globus or local)."""

    def __init__(
        self, backend: TransferBackend, *, timeout: float = 24 * 3600, poll_interval: float = 10
    ) -> None:
        self.backend = backend
        self.timeout = timeout
        self.poll_interval = poll_interval

    def _finish(self, task_id: str) -> TaskStatus:
        status = self.backend.wait(task_id, timeout=self.timeout, poll_interval=self.poll_interval)
        if status.status == "ACTIVE":
            raise TaskFailed(status, f"task {task_id} still ACTIVE after {self.timeout} s; "
                                     "it keeps running, check it later with task_status()")
        if not status.succeeded:
            raise TaskFailed(status)
        return status

    def ls(self, location: str) -> list[Entry]:
        ep, path = split_location(location)
        return self.backend.ls(ep, path)

    def stat(self, location: str) -> Entry | None:
        ep, path = split_location(location)
        return self.backend.stat(ep, path)

    def mkdir(self, location: str) -> None:
        ep, path = split_location(location)
        self.backend.mkdir(ep, path)

    def rm(self, location: str, recursive: bool = False) -> TaskStatus:
        ep, path = split_location(location)
        return self._finish(self.backend.delete(ep, [path], recursive=recursive))

    def rename(self, src: str, dst: str) -> None:
        sep, spath = split_location(src)
        dep, dpath = split_location(dst)
        if sep != dep:
            raise TransferError(f"rename must stay on one endpoint ({sep} != {dep})")
        self.backend.rename(sep, spath, dpath)

    def cp(
        self,
        src: str,
        dst: str,
        recursive: bool = False,
        *,
        external_checksum: str | None = None,
        sync_level: str | None = None,
        label: str | None = None,
        submission_id: str | None = None,
    ) -> TaskStatus:
        """Copy one file or directory tree and wait; raises TaskFailed unless SUCCEEDED.

        Pass a ``submission_id`` you stored beforehand to make a retry idempotent.
        """
        sep, spath = split_location(src)
        dep, dpath = split_location(dst)
        item = TransferItem(spath, dpath, recursive=recursive, external_checksum=external_checksum)
        task_id = self.backend.submit_transfer(
            sep, dep, [item],
            submission_id=submission_id or self.backend.submission_id(),
            label=label, sync_level=sync_level, verify_checksum=True,
        )
        return self._finish(task_id)

    def fts(self, location: str) -> Iterator[tuple[str, str, Entry]]:
        """Walk a tree like MAP's ``fts``: yield (endpoint, dirpath, entry), dirs before contents."""
        ep, root = split_location(location)
        stack = [root]
        while stack:
            dirpath = stack.pop()
            subdirs = []
            for entry in self.backend.ls(ep, dirpath):
                yield ep, dirpath, entry
                if entry.type == "dir":
                    subdirs.append(join_remote(dirpath, entry.name))
            stack.extend(reversed(subdirs))

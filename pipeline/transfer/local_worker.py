"""Detached worker that executes one local-backend transfer task.

Run as ``python -m pipeline.transfer.local_worker --state-dir D --task-id T
[--lock-fd N]``.  It is the only writer of the task record while it runs and
holds the task lock until it exits (see ``local.py`` for the protocol).

Per file: sync-level check, then a one-pass copy (8 MiB buffer, MD5 computed
while copying) into a hidden temporary file in the destination folder, fsync,
mtime preserved, checksum compared with the item's ``external_checksum``, and
only then ``os.replace`` onto the final name.  Sources are opened read-only and
never modified.  The first fatal fault fails the task (as Globus does for a
checksum mismatch); files already renamed into place stay, complete.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from .base import PathEscapeError, TransferError, path_parts
from .local import StateDir, fault, now_iso, read_json, resolve_in_root, write_json_atomic

CHUNK = 8 * 1024 * 1024


class TaskFault(Exception):
    """A fatal fault for the running task: (code, description)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def file_md5(path: Path, chunk: int = CHUNK) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tmp_name_for(dst: Path, task_id: str) -> Path:
    """Hidden temporary name next to the destination, unique per task."""
    return dst.with_name(f".{dst.name}.{task_id[:8]}.part")


class Worker:
    def __init__(self, state: StateDir, task_id: str) -> None:
        self.state = state
        self.task_id = task_id
        self.path = state.task(task_id)
        self.rec: dict[str, Any] = read_json(self.path)
        self.src_root = Path(self.rec["source_root"])
        self.dst_root = Path(self.rec["destination_root"])
        self.level: int | None = self.rec.get("sync_level")
        self.verify: bool = bool(self.rec.get("verify_checksum", True))
        limit = self.rec.get("max_bytes_per_second")
        self.limit: float | None = float(limit) if limit else None

    def save(self, **changes: Any) -> None:
        self.rec.update(changes)
        write_json_atomic(self.path, self.rec)

    # -- planning
    def plan(self) -> Iterator[tuple[str, str, str | None]]:
        """Yield (source_path, destination_path, external_checksum) per file."""
        for item in self.rec["items"]:
            src = resolve_in_root(self.src_root, item["source_path"])
            if item.get("recursive"):
                if not src.is_dir():
                    raise TaskFault("FILE_NOT_FOUND", f"source directory {item['source_path']} does not exist")
                for dirpath, dirnames, filenames in os.walk(src):
                    rel = Path(dirpath).relative_to(src)
                    for name in sorted(dirnames):
                        resolve_in_root(self.src_root, _join(item["source_path"], rel, name))
                        d = resolve_in_root(self.dst_root, _join(item["destination_path"], rel, name))
                        d.mkdir(parents=True, exist_ok=True)
                    for name in sorted(filenames):
                        yield (
                            _join(item["source_path"], rel, name),
                            _join(item["destination_path"], rel, name),
                            None,
                        )
                resolve_in_root(self.dst_root, item["destination_path"]).mkdir(parents=True, exist_ok=True)
            else:
                yield item["source_path"], item["destination_path"], item.get("external_checksum")

    # -- one file
    def skip_by_sync_level(self, src: Path, dst: Path) -> bool:
        if self.level is None or not dst.is_file():
            return False
        if self.level == 0:
            return True
        s, d = src.stat(), dst.stat()
        if self.level == 1:
            return s.st_size == d.st_size
        if self.level == 2:
            return int(s.st_mtime) <= int(d.st_mtime)
        return s.st_size == d.st_size and file_md5(src) == file_md5(dst)

    def copy(self, src_remote: str, dst_remote: str, expected: str | None) -> None:
        src = resolve_in_root(self.src_root, src_remote)
        dst = resolve_in_root(self.dst_root, dst_remote)
        if not src.exists():
            raise TaskFault("FILE_NOT_FOUND", f"source file {src_remote} does not exist")
        if not src.is_file():
            raise TaskFault("NOT_A_FILE", f"source {src_remote} is not a regular file (use recursive for directories)")
        if dst.is_dir():
            raise TaskFault("IS_A_DIRECTORY", f"destination {dst_remote} is a directory")
        if self.skip_by_sync_level(src, dst):
            self.save(files_skipped=self.rec["files_skipped"] + 1)
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        resolve_in_root(self.dst_root, dst_remote)  # re-check after creating parents
        tmp = tmp_name_for(dst, self.task_id)
        self.save(in_progress_tmp=str(tmp), nice_status="OK")
        try:
            before = os.stat(src)
            digest, nbytes = self._copy_bytes(src, tmp)
            after = os.stat(src)
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                raise TaskFault("SOURCE_CHANGED", f"source file {src_remote} changed while it was being copied")
            if self.verify and expected and digest.lower() != expected.strip().lower():
                raise TaskFault(
                    "CHECKSUM_MISMATCH",
                    f"checksum mismatch for {src_remote}: expected MD5 {expected}, "
                    f"source data has MD5 {digest}; destination {dst_remote} not written",
                )
            os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.replace(tmp, dst)
            _fsync_dir(dst.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.save(
            in_progress_tmp=None,
            files_transferred=self.rec["files_transferred"] + 1,
            bytes_transferred=self.rec["bytes_transferred"] + nbytes,
        )

    def _copy_bytes(self, src: Path, tmp: Path) -> tuple[str, int]:
        chunk = CHUNK if not self.limit else max(64 * 1024, min(CHUNK, int(self.limit / 8)))
        h = hashlib.md5()
        buf = bytearray(chunk)
        view = memoryview(buf)
        total = 0
        started = time.monotonic()
        tmp.unlink(missing_ok=True)  # leftover of an earlier attempt of this same task
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        # MD5 of a block runs in a helper thread while the same block is written (both release
        # the GIL), so a copy costs about max(hash, write) rather than their sum.
        with open(src, "rb", buffering=0) as fin, open(fd, "wb", buffering=0) as fout, \
                ThreadPoolExecutor(max_workers=1) as hasher:
            while n := fin.readinto(buf):
                block = view[:n]
                hashing = hasher.submit(h.update, block)
                try:
                    written = 0
                    while written < n:
                        written += fout.write(block[written:])
                finally:
                    hashing.result()  # the buffer is reused by the next read
                total += n
                if self.limit:
                    ahead = total / self.limit - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            os.fsync(fout.fileno())
        return h.hexdigest(), total

    # -- the task
    def run(self) -> None:
        if self.rec.get("status") != "ACTIVE":
            return
        self.save(worker_pid=os.getpid(), nice_status="OK")
        try:
            plan = list(self.plan())
            self.save(files=len(plan))
            for src_remote, dst_remote, expected in plan:
                self.copy(src_remote, dst_remote, expected)
        except TaskFault as err:
            self._fail(err.code, err.description)
        except PathEscapeError as err:
            self._fail("PATH_ESCAPE", str(err))
        except PermissionError as err:
            self._fail("PERMISSION_DENIED", f"{err.strerror}: {err.filename}")
        except (OSError, TransferError) as err:
            self._fail("ERROR", f"{type(err).__name__}: {err}")
        else:
            self.save(status="SUCCEEDED", nice_status=None, in_progress_tmp=None, completion_time=now_iso())

    def _fail(self, code: str, description: str) -> None:
        err = fault(code, description)
        self.save(
            status="FAILED",
            nice_status=code,
            fatal_error=err,
            faults=[*self.rec.get("faults", []), err],
            in_progress_tmp=None,
            completion_time=now_iso(),
        )


def _join(base: str, rel: Path, name: str) -> str:
    parts = path_parts(base) + [p for p in rel.parts if p not in ("", ".")] + [name]
    return "/" + "/".join(parts)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--task-id", required=True)
    parser.add_argument("--lock-fd", type=int, default=None,
                        help="inherited fd already holding the task lock")
    args = parser.parse_args(argv)
    state = StateDir(args.state_dir)
    lock_fd = args.lock_fd
    if lock_fd is None:  # started by hand: take the lock ourselves, or leave
        lock_fd = os.open(state.lock(args.task_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"task {args.task_id} already has a running worker", file=sys.stderr)
            return 1
    Worker(state, args.task_id).run()
    os.close(lock_fd)  # release only after the final status is on disk
    return 0


if __name__ == "__main__":
    sys.exit(main())

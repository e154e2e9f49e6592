"""LocalBackend specifics: atomic placement, detached workers, confinement."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.transfer import LocalBackend, PathEscapeError, TransferItem, md5_file
from pipeline.transfer.base import join_remote, validate_name

SRC, DST = "src-collection", "dst-collection"
WAIT = dict(timeout=30, poll_interval=0.05)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {SRC: tmp_path / "src", DST: tmp_path / "dst", "state": tmp_path / "state",
         "outside": tmp_path / "outside"}
    for p in d.values():
        p.mkdir()
    return d


@pytest.fixture
def backend(dirs: dict[str, Path]) -> LocalBackend:
    return LocalBackend({SRC: dirs[SRC], DST: dirs[DST]}, dirs["state"])


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_corrupted_source_fails_and_leaves_no_file(backend: LocalBackend, dirs) -> None:
    src = write(dirs[SRC] / "sess" / "probe1.bin", b"A" * 100_000)
    recorded = md5_file(src)
    write(src, b"A" * 99_999 + b"B")  # bit rot after the checksum was recorded
    actual = md5_file(src)
    task = backend.submit_transfer(
        SRC, DST, [TransferItem("/sess/probe1.bin", "/arch/probe1.bin", external_checksum=recorded)],
        submission_id=backend.submission_id(),
    )
    status = backend.wait(task, **WAIT)
    assert status.status == "FAILED"
    fault = status.faults[-1]
    assert "CHECKSUM_MISMATCH" in fault and "/sess/probe1.bin" in fault
    assert recorded in fault and actual in fault
    assert not (dirs[DST] / "arch" / "probe1.bin").exists()
    assert os.listdir(dirs[DST] / "arch") == []  # no temporary file left either


def test_copy_complete_no_temp_left_and_source_untouched(backend: LocalBackend, dirs) -> None:
    data = os.urandom(9 * 1024 * 1024 + 17)  # more than one 8 MiB copy buffer
    src = write(dirs[SRC] / "a" / "big.bin", data)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    before = (src.stat().st_mtime_ns, src.stat().st_size, md5_file(src))
    task = backend.submit_transfer(
        SRC, DST, [TransferItem("/a/big.bin", "/b/big.bin", external_checksum=before[2])],
        submission_id=backend.submission_id(),
    )
    status = backend.wait(task, **WAIT)
    assert status.succeeded and status.bytes_transferred == len(data)
    assert os.listdir(dirs[DST] / "b") == ["big.bin"]
    dst = dirs[DST] / "b" / "big.bin"
    assert dst.read_bytes() == data
    assert dst.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert (src.stat().st_mtime_ns, src.stat().st_size, md5_file(src)) == before
    assert backend.task_record(task)["in_progress_tmp"] is None


def test_md5_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024)  # more than one 8 MiB chunk
    p = write(tmp_path / "f.bin", data)
    assert md5_file(p) == hashlib.md5(data).hexdigest()


def test_recursive_directory_transfer(backend: LocalBackend, dirs) -> None:
    write(dirs[SRC] / "s" / "g0" / "imec0" / "a.bin", b"a")
    write(dirs[SRC] / "s" / "g0" / "imec1" / "b.bin", b"bb")
    (dirs[SRC] / "s" / "empty").mkdir()
    task = backend.submit_transfer(SRC, DST, [TransferItem("/s", "/t", recursive=True)],
                                   submission_id=backend.submission_id())
    status = backend.wait(task, **WAIT)
    assert status.succeeded and (status.files, status.files_transferred) == (2, 2)
    assert (dirs[DST] / "t" / "g0" / "imec1" / "b.bin").read_bytes() == b"bb"
    assert (dirs[DST] / "t" / "empty").is_dir()


SUBMITTER = textwrap.dedent("""
    import os, signal, sys
    from pipeline.transfer import LocalBackend, TransferItem
    src, dst, state, sid, checksum = sys.argv[1:6]
    b = LocalBackend({"S": src, "D": dst}, state, max_bytes_per_second=4 * 1024 * 1024)
    task = b.submit_transfer("S", "D", [TransferItem("/big.bin", "/out/big.bin", external_checksum=checksum)],
                             submission_id=sid)
    print(task, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_task_survives_sigkill_of_submitter_and_resubmit_does_not_copy_twice(dirs) -> None:
    data = os.urandom(2 * 1024 * 1024)
    checksum = hashlib.md5(data).hexdigest()
    write(dirs[SRC] / "big.bin", data)
    sid = "archive-SC022-20200101-ephys"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, str(dirs[SRC]), str(dirs[DST]), str(dirs["state"]), sid, checksum],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    task_id = out.strip()
    backend = LocalBackend({"S": dirs[SRC], "D": dirs[DST]}, dirs["state"])
    status = backend.wait(task_id, **WAIT)
    assert status.status == "SUCCEEDED", status
    dst = dirs[DST] / "out" / "big.bin"
    assert md5_file(dst) == checksum
    placed = dst.stat()
    # the worker was a different, detached process
    assert backend.task_record(task_id)["worker_pid"] not in (proc.pid, os.getpid())

    again = backend.submit_transfer("S", "D", [TransferItem("/big.bin", "/out/big.bin", external_checksum=checksum)],
                                    submission_id=sid)
    assert again == task_id
    assert backend.wait(again, **WAIT).files_transferred == 1
    assert backend.task_ids() == [task_id]
    after = dst.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (placed.st_ino, placed.st_mtime_ns, placed.st_ctime_ns)


def test_killed_worker_reported_failed_and_partial_file_removed(dirs) -> None:
    write(dirs[SRC] / "slow.bin", os.urandom(4 * 1024 * 1024))
    backend = LocalBackend({SRC: dirs[SRC], DST: dirs[DST]}, dirs["state"], max_bytes_per_second=1024 * 1024)
    task = backend.submit_transfer(SRC, DST, [TransferItem("/slow.bin", "/slow.bin")],
                                   submission_id=backend.submission_id())
    deadline = time.monotonic() + 20
    rec = backend.task_record(task)
    # the worker records the temporary name just before it creates the file: wait for both
    while not (rec.get("worker_pid") and rec.get("in_progress_tmp") and Path(rec["in_progress_tmp"]).exists()) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
        rec = backend.task_record(task)
    tmp = Path(rec["in_progress_tmp"])
    assert tmp.name.startswith(".slow.bin.") and tmp.exists()
    assert backend.task_status(task).status == "ACTIVE"
    os.kill(rec["worker_pid"], signal.SIGKILL)
    status = backend.wait(task, **WAIT)
    assert status.status == "FAILED" and not status.succeeded
    assert status.nice_status == "WORKER_DIED"
    assert "exited without finishing" in status.faults[-1]
    assert not tmp.exists()
    assert os.listdir(dirs[DST]) == []


def test_path_escape_refused(backend: LocalBackend, dirs) -> None:
    secret = write(dirs["outside"] / "secret.txt", b"not yours")
    for bad in ("../x", "/a/../../x", "x/../../y", "relative"):
        with pytest.raises(PathEscapeError):
            backend.ls(SRC, bad)
        with pytest.raises(PathEscapeError):
            backend.submit_transfer(SRC, DST, [TransferItem(bad, "/ok")], submission_id=backend.submission_id())
    # an absolute filesystem path is a path *inside* the collection, never the real one
    assert backend.stat(SRC, str(secret)) is None
    backend.mkdir(SRC, "/" + dirs["outside"].name)
    assert (dirs[SRC] / dirs["outside"].name).is_dir()
    assert os.listdir(dirs["outside"]) == ["secret.txt"]
    # names coming back from listings are checked before being joined
    for name in ("/etc/passwd", "..", "a/b", ""):
        with pytest.raises(PathEscapeError):
            join_remote("/dir", name)
        with pytest.raises(PathEscapeError):
            validate_name(name)
    # symlinks pointing outside the collection
    os.symlink(dirs["outside"], dirs[SRC] / "link")
    os.symlink(secret, dirs[SRC] / "file-link")
    with pytest.raises(PathEscapeError):
        backend.ls(SRC, "/link")
    with pytest.raises(PathEscapeError):
        backend.stat(SRC, "/file-link")
    with pytest.raises(PathEscapeError):
        backend.submit_transfer(SRC, DST, [TransferItem("/link/secret.txt", "/s.txt")],
                                submission_id=backend.submission_id())
    with pytest.raises(PathEscapeError):
        backend.submit_transfer(SRC, DST, [TransferItem("/file-link", "/s.txt")],
                                submission_id=backend.submission_id())
    assert [e.name for e in backend.ls(SRC, "/")] == [dirs["outside"].name]  # links hidden
    # a recursive copy that meets an escaping symlink fails instead of copying it
    os.mkdir(dirs[SRC] / "tree")
    os.symlink(secret, dirs[SRC] / "tree" / "sneaky")
    task = backend.submit_transfer(SRC, DST, [TransferItem("/tree", "/tree", recursive=True)],
                                   submission_id=backend.submission_id())
    status = backend.wait(task, **WAIT)
    assert status.status == "FAILED" and "PATH_ESCAPE" in status.faults[-1]
    assert not (dirs[DST] / "tree" / "sneaky").exists()
    assert secret.read_bytes() == b"not yours"

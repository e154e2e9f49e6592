"""One contract, two backends: GlobusBackend (real TransferClient over mocked HTTP,
served by pipeline.transfer.testing.FakeTransferService) and LocalBackend (real
directories and detached workers)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import globus_sdk
import pytest
import responses
from globus_sdk.transport import RetryConfig

from pipeline.transfer import (
    AlreadyExists,
    GlobusStorageManager,
    LocalBackend,
    NotFound,
    TaskFailed,
    TransferItem,
)
from pipeline.transfer.globus import GlobusBackend
from pipeline.transfer.testing import FakeTransferService

SRC = "5b875fda-4185-11e8-bb52-0ac6873fc732"
DST = "c40e971d-0075-4a82-b12f-8f9717762e7b"
WAIT = dict(timeout=20, poll_interval=0.05)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Harness:
    backend: GlobusBackend | LocalBackend
    put: Callable[..., None]
    read: Callable[[str, str], bytes | None]
    task_count: Callable[[], int]


@pytest.fixture(params=["globus", "local"])
def env(request: pytest.FixtureRequest, tmp_path: Path):
    h = Harness()
    if request.param == "globus":
        fake = FakeTransferService([SRC, DST])
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            fake.register(rsps)
            client = globus_sdk.TransferClient(
                authorizer=globus_sdk.AccessTokenAuthorizer("fake-contract-token"),
                retry_config=RetryConfig(max_retries=0),
            )
            h.backend = GlobusBackend(client)
            h.put = fake.put_file
            h.read = fake.read_file
            h.task_count = lambda: len(fake.tasks)
            yield h
    else:
        roots = {SRC: tmp_path / "src", DST: tmp_path / "dst"}
        for r in roots.values():
            r.mkdir()
        backend = LocalBackend(roots, tmp_path / "state")

        def put(ep: str, path: str, data: bytes, mtime: float | None = None) -> None:
            p = roots[ep] / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            if mtime is not None:
                os.utime(p, (mtime, mtime))

        def read(ep: str, path: str) -> bytes | None:
            p = roots[ep] / path.lstrip("/")
            return p.read_bytes() if p.is_file() else None

        h.backend, h.put, h.read = backend, put, read
        h.task_count = lambda: len(backend.task_ids())
        yield h


def test_ls_stat_mkdir_rename_delete(env: Harness) -> None:
    b = env.backend
    env.put(SRC, "/a/x.bin", b"hello")
    b.mkdir(SRC, "/a/sub")
    entries = b.ls(SRC, "/a")
    assert [(e.name, e.type) for e in entries] == [("sub", "dir"), ("x.bin", "file")]
    assert entries[1].size == 5
    st = b.stat(SRC, "/a/x.bin")
    assert st is not None and (st.name, st.type, st.size) == ("x.bin", "file", 5)
    assert b.stat(SRC, "/a/missing") is None
    with pytest.raises(AlreadyExists):
        b.mkdir(SRC, "/a/sub")
    with pytest.raises(NotFound):
        b.mkdir(SRC, "/nope/child")
    with pytest.raises(NotFound):
        b.ls(SRC, "/missing")

    b.rename(SRC, "/a/x.bin", "/a/y.bin")
    assert b.stat(SRC, "/a/x.bin") is None
    assert b.stat(SRC, "/a/y.bin").size == 5
    assert env.read(SRC, "/a/y.bin") == b"hello"

    done = b.wait(b.delete(SRC, ["/a/y.bin"]), **WAIT)
    assert done.status == "SUCCEEDED"
    assert b.stat(SRC, "/a/y.bin") is None

    refused = b.wait(b.delete(SRC, ["/a"]), **WAIT)  # a directory, not recursive
    assert refused.status == "FAILED" and not refused.succeeded
    assert any("NOT_RECURSIVE" in f for f in refused.faults)
    assert b.stat(SRC, "/a/sub") is not None
    assert b.wait(b.delete(SRC, ["/a"], recursive=True), **WAIT).status == "SUCCEEDED"
    assert b.stat(SRC, "/a") is None


def test_transfer_with_checksums_succeeds(env: Harness) -> None:
    b = env.backend
    one, two = b"spikes" * 1000, b"video" * 333
    env.put(SRC, "/ephys/SC022/p1.bin", one, mtime=1_600_000_000)
    env.put(SRC, "/ephys/SC022/p2.bin", two, mtime=1_600_000_100)
    items = [
        TransferItem("/ephys/SC022/p1.bin", "/archive/SC022/p1.bin", external_checksum=md5(one)),
        TransferItem("/ephys/SC022/p2.bin", "/archive/SC022/p2.bin", external_checksum=md5(two)),
    ]
    task = b.submit_transfer(SRC, DST, items, submission_id=b.submission_id(), label="SC022 session 1")
    status = b.wait(task, **WAIT)
    assert status.status == "SUCCEEDED" and status.succeeded
    assert (status.files, status.files_transferred, status.files_skipped) == (2, 2, 0)
    assert status.bytes_transferred == len(one) + len(two)
    assert status.label == "SC022 session 1"
    assert status.faults == ()
    assert env.read(DST, "/archive/SC022/p1.bin") == one
    assert env.read(DST, "/archive/SC022/p2.bin") == two
    assert int(b.stat(DST, "/archive/SC022/p1.bin").mtime) == 1_600_000_000  # mtime preserved


def test_failed_task_surfaces_fault_and_is_not_success(env: Harness) -> None:
    b = env.backend
    env.put(SRC, "/raw/probe1.bin", b"real data")
    wrong = md5(b"other data")
    task = b.submit_transfer(
        SRC, DST, [TransferItem("/raw/probe1.bin", "/arch/probe1.bin", external_checksum=wrong)],
        submission_id=b.submission_id(),
    )
    status = b.wait(task, **WAIT)
    assert status.status == "FAILED"
    assert not status.succeeded
    assert status.fatal_error and "CHECKSUM_MISMATCH" in status.fatal_error
    assert any("CHECKSUM_MISMATCH" in f and "probe1.bin" in f for f in status.faults)
    assert b.stat(DST, "/arch/probe1.bin") is None
    assert b.task_status(task).status == "FAILED"


def test_missing_source_fails_task(env: Harness) -> None:
    b = env.backend
    task = b.submit_transfer(SRC, DST, [TransferItem("/nothing.bin", "/x.bin")], submission_id=b.submission_id())
    status = b.wait(task, **WAIT)
    assert status.status == "FAILED"
    assert any("FILE_NOT_FOUND" in f for f in status.faults)


@pytest.mark.parametrize(
    "level, dst_data, dst_mtime, expect_skip",
    [
        ("exists", b"totally different and longer", 1_000, True),
        ("size", b"SAME-SIZE!", 1_000, True),
        ("size", b"short", 1_000, False),
        ("mtime", b"older", 1_500_000_000, False),
        ("mtime", b"newer", 1_800_000_000, True),
        ("checksum", b"0123456789", 1_000, True),
        ("checksum", b"012345678X", 1_000, False),
    ],
)
def test_sync_level_skips_matching_files(env: Harness, level, dst_data, dst_mtime, expect_skip) -> None:
    b = env.backend
    src_data = b"0123456789"
    env.put(SRC, "/s/f.bin", src_data, mtime=1_700_000_000)
    env.put(DST, "/d/f.bin", dst_data, mtime=dst_mtime)
    task = b.submit_transfer(
        SRC, DST, [TransferItem("/s/f.bin", "/d/f.bin", external_checksum=md5(src_data))],
        submission_id=b.submission_id(), sync_level=level,
    )
    status = b.wait(task, **WAIT)
    assert status.status == "SUCCEEDED"
    if expect_skip:
        assert (status.files_skipped, status.files_transferred) == (1, 0)
        assert env.read(DST, "/d/f.bin") == dst_data
    else:
        assert (status.files_skipped, status.files_transferred) == (0, 1)
        assert env.read(DST, "/d/f.bin") == src_data


def test_same_submission_id_gives_one_task(env: Harness) -> None:
    b = env.backend
    data = b"once only"
    env.put(SRC, "/f.bin", data)
    sid = b.submission_id()
    item = TransferItem("/f.bin", "/g.bin", external_checksum=md5(data))
    first = b.submit_transfer(SRC, DST, [item], submission_id=sid)
    second = b.submit_transfer(SRC, DST, [item], submission_id=sid)
    assert first == second
    assert b.wait(first, **WAIT).files_transferred == 1
    third = b.submit_transfer(SRC, DST, [item], submission_id=sid)
    assert third == first
    assert env.task_count() == 1
    assert env.read(DST, "/g.bin") == data


def test_manager_cp_fts_rm(env: Harness) -> None:
    gsm = GlobusStorageManager(env.backend, timeout=20, poll_interval=0.05)
    env.put(SRC, "/root/SC022/20200101/a.bin", b"a")
    env.put(SRC, "/root/SC022/b.bin", b"bb")
    walked = {(dirpath, e.name, e.type) for _, dirpath, e in gsm.fts(f"{SRC}:/root")}
    assert walked == {
        ("/root", "SC022", "dir"),
        ("/root/SC022", "20200101", "dir"),
        ("/root/SC022", "b.bin", "file"),
        ("/root/SC022/20200101", "a.bin", "file"),
    }
    status = gsm.cp(f"{SRC}:/root/SC022/b.bin", f"{DST}:/copy/b.bin", external_checksum=md5(b"bb"))
    assert status.succeeded and env.read(DST, "/copy/b.bin") == b"bb"
    tree = gsm.cp(f"{SRC}:/root", f"{DST}:/tree", recursive=True)
    assert tree.files_transferred == 2
    assert env.read(DST, "/tree/SC022/20200101/a.bin") == b"a"
    assert [e.name for e in gsm.ls(f"{DST}:/tree/SC022")] == ["20200101", "b.bin"]
    with pytest.raises(TaskFailed) as exc:
        gsm.cp(f"{SRC}:/root/SC022/b.bin", f"{DST}:/bad.bin", external_checksum=md5(b"xx"))
    assert "CHECKSUM_MISMATCH" in str(exc.value) and exc.value.status.status == "FAILED"
    gsm.rm(f"{DST}:/tree", recursive=True)
    assert gsm.stat(f"{DST}:/tree") is None
    with pytest.raises(TaskFailed):
        gsm.rm(f"{DST}:/tree")

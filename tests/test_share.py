"""Share discovery: the scan records every file; a re-scan writes only what changed; nothing is forgotten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import config as _config


@pytest.fixture
def share_tables(modules):
    from ingest import share

    yield share
    for table in (share.ScanProblem, share.ShareDir, share.ShareFile, share.ShareRoot):
        table().delete_quick()


def make_config(**paths) -> _config.PipelineConfig:
    return _config.load_config(check_paths=False).with_custom(paths, "test")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_records_changes_and_vanished_files(share_tables, tmp_path):
    share = share_tables
    root = tmp_path / "behavior"
    for i in range(30):
        write(root / f"dl{i % 3}" / "delay_task" / "Session Data" / f"f{i}.mat", b"x" * i)
    cfg = make_config(behavior_data_paths=[["RRig", str(root), 0]])

    first = share.scan(["behavior"], cfg)[0]
    assert (len(first.new), len(first.changed), len(first.vanished), first.unchanged) == (30, 0, 0, 0)
    files = share.ShareFile & {"status": "present"}
    assert len(files) == 30
    row = (share.ShareFile & {"relpath": "dl1/delay_task/Session Data/f4.mat"}).to_dicts()[0]
    assert row["size"] == 4 and abs(row["mtime"] - (root / "dl1/delay_task/Session Data/f4.mat").stat().st_mtime) < 1e-6

    again = share.scan(["behavior"], cfg)[0]
    assert (len(again.new), len(again.changed), len(again.vanished), again.unchanged) == (0, 0, 0, 30)

    write(root / "dl0/delay_task/Session Data/f3.mat", b"changed!")
    (root / "dl2/delay_task/Session Data/f5.mat").unlink()
    write(root / "dl9/new.mat", b"new")
    third = share.scan(["behavior"], cfg)[0]
    assert third.changed == ["dl0/delay_task/Session Data/f3.mat"]
    assert third.vanished == ["dl2/delay_task/Session Data/f5.mat"]
    assert third.new == ["dl9/new.mat"]
    assert third.unchanged == 28
    vanished = (share.ShareFile & {"status": "vanished"}).to_dicts()
    assert [r["relpath"] for r in vanished] == ["dl2/delay_task/Session Data/f5.mat"]  # still recorded
    assert (share.ShareFile & {"relpath": "dl0/delay_task/Session Data/f3.mat"}).to_dicts()[0]["size"] == 8

    write(root / "dl2/delay_task/Session Data/f5.mat", b"back")
    fourth = share.scan(["behavior"], cfg)[0]
    assert fourth.changed == ["dl2/delay_task/Session Data/f5.mat"] and not fourth.vanished
    assert len(share.ShareFile & {"status": "present"}) == 31


def test_unreadable_folder_is_a_recorded_problem(share_tables, tmp_path):
    share = share_tables
    root = tmp_path / "ephys"
    write(root / "dl1" / "good.txt", b"ok")
    (root / "dl1" / "loop").symlink_to(root / "dl1" / "loop")          # ELOOP even for root
    (root / "dl1" / "dangling").symlink_to(tmp_path / "nowhere")
    cfg = make_config(ephys_data_paths=[["RRig", str(root), 0]])
    report = share.scan(["ephys"], cfg)[0]
    assert [f for f in report.new] == ["dl1/good.txt"]
    problems = dict(report.problems)
    assert set(problems) == {"dl1/loop", "dl1/dangling"}
    assert "Too many levels of symbolic links" in problems["dl1/loop"]
    assert "No such file or directory" in problems["dl1/dangling"]
    recorded = {r["relpath"]: r["problem"] for r in share.ScanProblem.to_dicts()}
    assert recorded == problems
    os.unlink(root / "dl1" / "loop")
    share.scan(["ephys"], cfg)
    assert set(r["relpath"] for r in share.ScanProblem.to_dicts()) == {"dl1/dangling"}


def test_missing_share_root_is_a_clear_error(share_tables, tmp_path):
    share = share_tables
    cfg = make_config(video_data_paths=[["RRig", str(tmp_path / "not-mounted"), 0]])
    with pytest.raises(_config.ConfigError, match=r"video share .*not-mounted \(key custom.video_data_paths\) does not exist"):
        share.scan(["video"], cfg)


def test_folder_that_vanishes_and_returns(share_tables, tmp_path):
    import shutil

    share = share_tables
    root = tmp_path / "video"
    for i in range(5):
        write(root / "dl1" / "20180101" / "video" / f"dl1_side_{i:03d}-0000.avi", b"v" * (i + 1))
    write(root / "dl2" / "20180102" / "video" / "dl2_side_000-0000.avi", b"w")
    cfg = make_config(video_data_paths=[["RRig", str(root), 0]])
    assert len(share.scan(["video"], cfg)[0].new) == 6
    shutil.move(root / "dl1", tmp_path / "dl1-away")
    gone = share.scan(["video"], cfg)[0]
    assert len(gone.vanished) == 5 and gone.unchanged == 1 and not gone.new
    assert len(share.ShareFile & {"status": "vanished"}) == 5
    assert share.scan(["video"], cfg)[0].vanished == []  # reported once, not again and again
    shutil.move(tmp_path / "dl1-away", root / "dl1")
    back = share.scan(["video"], cfg)[0]
    assert len(back.changed) == 5 and not back.new and not back.vanished
    assert len(share.ShareFile & {"status": "present"}) == 6 and len(share.ShareFile()) == 6

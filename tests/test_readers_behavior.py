"""Behaviour and tracking readers (Bpod SessionData, MAP delay-task rules, DeepLabCut), checked
against the rig-share simulator's ground-truth manifest. No database."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ingest.readers.behavior_rules import (
    bitcode_bits, interpret_trial, trial_events,
)
from ingest.readers.bpod import parse_bpod_filename, read_bpod_session
from ingest.readers.dlc import (
    FEATURE_OF_PART, MAP_FEATURES, parse_dlc_filename, read_dlc_csv, read_trial_map,
)
from ingest.readers.errors import ReaderError
from ingest.simulator import simulate_share, write_broken_catalogue
from ingest.simulator.bpod import session_data
from ingest.simulator.model import BODY_PARTS, STATE_NAMES, build_plan

TOL = 1e-6
REWARD = ("GiveLeftDrop", "GiveRightDrop")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def share(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    return root, simulate_share(root, subjects=2, sessions=2, scale="tiny", seed=5)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    cases = write_broken_catalogue(root, seed=0)
    return root, {c["case"]: c for c in cases}, json.loads((root / "manifest.json").read_text())


@pytest.fixture(scope="module")
def sessions(share):
    """(manifest session entry, BpodSession) for every session of the share."""
    root, m = share
    return [(s, read_bpod_session(root / s["behavior_file"])) for s in m["sessions"]]


def all_trials(sessions):
    for s, bs in sessions:
        for mt, bt in zip(s["trials"], bs.trials):
            yield s, mt, bt


# ----------------------------------------------------------------------------- Bpod reader
def test_session_counts_and_start(sessions):
    assert len(sessions) == 5  # 2 subjects x 2 sessions + the unregistered xx99 session
    for s, bs in sessions:
        assert bs.n_trials == s["n_trials"] == len(bs.trials)
        assert [t.number for t in bs.trials] == list(range(1, s["n_trials"] + 1))
        assert bs.start == dt.datetime.fromisoformat(f"{s['date']}T{s['start_time']}")
        assert bs.protocol == "delay_task"
        records = [interpret_trial(t) for t in bs.trials]
        assert sum(r is not None for r in records) == s["n_trials_ingestable"]


def test_trial_fields(sessions):
    n = 0
    for s, mt, bt in all_trials(sessions):
        assert bt.number == mt["number"]
        assert bt.start == pytest.approx(mt["start"], abs=TOL)
        assert bt.end == pytest.approx(mt["end"], abs=TOL)
        assert bt.protocol_type == mt["protocol_type"]
        assert bt.trial_type == mt["trial_type_code"]
        assert bt.auto_water is mt["auto_water"]
        assert bt.bitcode == mt["bitcode"]
        assert isinstance(bt.gui, dict) and bt.gui["Subject"] == s["h2o"]
        n += 1
    assert n == sum(s["n_trials"] for s, _ in sessions)


def test_states_and_events_match_manifest(sessions):
    multi_visit = single_visit = 0
    for s, mt, bt in all_trials(sessions):
        assert set(bt.states) == set(STATE_NAMES)
        for name, rows in bt.states.items():
            assert rows.ndim == 2 and rows.shape[1] == 2, (name, rows.shape)
            want = mt["states"].get(name)
            if want is None:  # unvisited: Bpod's [NaN NaN] row
                assert rows.shape == (1, 2) and np.isnan(rows).all()
                assert not bt.visited(name)
            else:
                np.testing.assert_allclose(rows, np.array(want), atol=TOL, rtol=0)
                multi_visit += len(want) > 1
                single_visit += len(want) == 1
        for ev, key in (("Port1In", "licks_left"), ("Port2In", "licks_right")):
            got = bt.event_times(ev)
            assert got.ndim == 1
            np.testing.assert_allclose(got, np.array(mt[key], float), atol=TOL, rtol=0)
        assert bt.visits("ResponseCue")[0, 0] == pytest.approx(mt["go_cue"], abs=TOL)
    assert multi_visit > 0 and single_visit > 0  # both squeeze shapes were exercised


def test_training_trials_are_skipped(sessions):
    skipped = 0
    for s, mt, bt in all_trials(sessions):
        rec = interpret_trial(bt)
        assert (rec is None) == (mt["protocol_type"] < 3)
        skipped += rec is None
    assert skipped >= len(sessions)  # every tiny session starts with a training trial


def test_rules_match_manifest(sessions):
    seen = set()
    for s, mt, bt in all_trials(sessions):
        rec = interpret_trial(bt)
        if rec is None:
            continue
        seen.add(mt["outcome"])
        assert rec.trial == mt["number"]
        assert rec.start_time == pytest.approx(mt["start"], abs=TOL)
        assert rec.stop_time == pytest.approx(mt["end"], abs=TOL)
        assert rec.protocol_type == mt["protocol_type"]
        assert rec.instruction == mt["instruction"]
        assert rec.outcome == mt["outcome"]
        assert rec.early_lick == ("early" if mt["early_lick"] else "no early")
        assert rec.auto_water is mt["auto_water"]
        assert rec.free_water is False
        assert rec.bitcode == mt["bitcode"]
        notes = dict(rec.notes)
        assert notes["bitcode"] == str(mt["bitcode"])
        assert notes["protocol #"] == str(mt["protocol_type"])
        # licks
        left = [a.time for a in rec.action_events if a.action_event_type == "left lick"]
        right = [a.time for a in rec.action_events if a.action_event_type == "right lick"]
        assert len(left) == len(mt["licks_left"]) and len(right) == len(mt["licks_right"])
        np.testing.assert_allclose(left, mt["licks_left"], atol=TOL, rtol=0)
        np.testing.assert_allclose(right, mt["licks_right"], atol=TOL, rtol=0)
        times = [a.time for a in rec.action_events]
        assert times == sorted(times)
        # trial events: the last visit of each state is kept
        st = mt["states"]
        ev = {}
        for e in rec.trial_events:
            assert e.trial_event_type not in ev, "one event per type with visit='last'"
            ev[e.trial_event_type] = e
        for etype, state in (("presample", "PreSamplePeriod"), ("sample", "SamplePeriod"),
                             ("delay", "DelayPeriod"), ("go", "ResponseCue"),
                             ("trialend", "TrialEnd")):
            a, b = st[state][-1]
            assert ev[etype].time == pytest.approx(a, abs=TOL), (etype, mt["number"])
            assert ev[etype].duration == pytest.approx(b - a, abs=TOL)
        assert rec.go_cue == pytest.approx(mt["go_cue"], abs=TOL)
        assert ev["delay"].time + ev["delay"].duration == pytest.approx(mt["go_cue"], abs=TOL)
        drops = [st[r][0] for r in REWARD if r in st]
        if drops:
            assert ev["reward"].time == pytest.approx(drops[0][0], abs=TOL)
        else:
            assert "reward" not in ev
        after_go = sorted(t for t in mt["licks_left"] + mt["licks_right"] if t >= mt["go_cue"])
        if after_go:
            assert ev["choice"].time == pytest.approx(after_go[0], abs=TOL)
            assert ev["choice"].duration == 0.0
        else:
            assert "choice" not in ev
        evt = [e.time for e in rec.trial_events]
        assert evt == sorted(evt)
    assert seen == {"hit", "miss", "ignore"}


def test_visit_choice_on_restarted_epochs(sessions):
    n = 0
    for s, mt, bt in all_trials(sessions):
        for etype, state in (("sample", "SamplePeriod"), ("delay", "DelayPeriod")):
            rows = mt["states"].get(state, [])
            if len(rows) < 2 or mt["protocol_type"] < 3:
                continue
            n += 1
            assert mt["early_lick"]
            all_ev = [e for e in trial_events(bt, visit="all") if e.trial_event_type == etype]
            assert [e.time for e in all_ev] == pytest.approx([r[0] for r in rows], abs=TOL)
            first = [e for e in trial_events(bt, visit="first") if e.trial_event_type == etype]
            assert len(first) == 1 and first[0].time == pytest.approx(rows[0][0], abs=TOL)
            assert interpret_trial(bt).event(etype).time == pytest.approx(rows[-1][0], abs=TOL)
    assert n > 0
    with pytest.raises(ValueError):
        trial_events(bt, visit="middle")


def test_bitcode_bits():
    assert bitcode_bits(523) == "1000001011"
    assert bitcode_bits(0) == "0000000000" and bitcode_bits(1023) == "1" * 10
    with pytest.raises(ValueError):
        bitcode_bits(1024)


def test_parse_bpod_filename(share):
    root, m = share
    for s in m["sessions"]:
        h2o, protocol, when = parse_bpod_filename(root / s["behavior_file"])
        assert (h2o, protocol) == (s["h2o"], "delay_task")
        assert when == dt.datetime.fromisoformat(f"{s['date']}T{s['start_time']}")
    p = parse_bpod_filename("dl7_TW_autoTrain_20180104_132813.mat")
    assert p == ("dl7", "TW_autoTrain", dt.datetime(2018, 1, 4, 13, 28, 13))
    for bad in ("dl7_20180104_132813.mat", "7dl_task_20180104_132813.mat",
                "dl7_task_20180104_132813.txt", "dl7_task_2018014_132813.mat",
                "dl7_task_20181304_132813.mat", "dl7_task_20180104_132813xmat"):
        assert parse_bpod_filename(bad) is None, bad


# -------------------------------------------------------------------- squeeze_me quirks
def _one_trial_session(tmp_path: Path) -> tuple[Path, object]:
    plan = build_plan(1, 1, "tiny", 3)
    sess = plan.sessions[0]
    tr = next(t for t in sess.trials if t.outcome == "hit" and t.protocol_type >= 3)
    # a single lick on each side -> scalar events after squeeze_me
    tr = dataclasses.replace(tr, number=1, licks_left=[tr.go_cue + 0.2],
                             licks_right=[tr.go_cue + 0.4])
    one = dataclasses.replace(sess, trials=[tr])
    path = tmp_path / "dl30_delay_task_20180402_100000.mat"
    scipy.io.savemat(path, {"SessionData": session_data(one)}, oned_as="row")
    return path, tr


def test_single_trial_session(tmp_path):
    path, tr = _one_trial_session(tmp_path)
    raw = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["SessionData"]
    assert np.ndim(raw.TrialStartTimestamp) == 0  # the quirk is real
    assert not isinstance(raw.RawEvents.Trial, np.ndarray)
    assert np.ndim(raw.RawEvents.Trial.Events.Port1In) == 0
    bs = read_bpod_session(path)
    assert bs.n_trials == 1 and len(bs.trials) == 1
    bt = bs.trials[0]
    assert bt.number == 1 and bt.start == pytest.approx(tr.start, abs=TOL)
    assert bt.bitcode == tr.bitcode and bt.protocol_type == tr.protocol_type
    assert bt.events["Port1In"].shape == (1,) and bt.events["Port2In"].shape == (1,)
    assert bt.events["Port1In"][0] == pytest.approx(tr.licks_left[0], abs=TOL)
    assert bt.states["PreSamplePeriod"].shape == (1, 2)
    rec = interpret_trial(bt)
    assert rec.outcome == "hit" and rec.instruction == tr.instruction
    assert [a.action_event_type for a in rec.action_events] == ["left lick", "right lick"]


def _mat_with(tmp_path: Path, name: str, mutate) -> Path:
    path, _ = _one_trial_session(tmp_path)
    sd = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)["SessionData"]
    d = {k: sd[k][0, 0] for k in sd.dtype.names}
    mdict = mutate(d)
    out = tmp_path / name
    scipy.io.savemat(out, mdict)
    return out


def test_missing_fields_raise(tmp_path):
    def drop(field):
        return lambda d: {"SessionData": {k: v for k, v in d.items() if k != field}}

    for field in ("TrialSettings", "RawEvents", "nTrials"):
        p = _mat_with(tmp_path, f"no_{field}.mat", drop(field))
        with pytest.raises(ReaderError) as ei:
            read_bpod_session(p)
        assert field in ei.value.reason and ei.value.path == p
        assert p.name in str(ei.value)

    p = _mat_with(tmp_path, "no_session_data.mat", lambda d: {"Other": d["nTrials"]})
    with pytest.raises(ReaderError) as ei:
        read_bpod_session(p)
    assert "SessionData" in ei.value.reason and "Other" in ei.value.reason

    def no_date(d):
        info = d["Info"]
        d["Info"] = {k: info[k][0, 0] if info[k].dtype == object else info[k][0]
                     for k in info.dtype.names if k != "SessionDate"}
        return {"SessionData": d}

    p = _mat_with(tmp_path, "no_date.mat", no_date)
    with pytest.raises(ReaderError, match="SessionDate"):
        read_bpod_session(p)

    def short_starts(d):
        d["nTrials"] = np.array([[2.0]])
        return {"SessionData": d}

    p = _mat_with(tmp_path, "count_mismatch.mat", short_starts)
    with pytest.raises(ReaderError, match="nTrials = 2 but SessionData.TrialStartTimestamp"):
        read_bpod_session(p)


def test_broken_truncated_mat(broken):
    root, cases, m = broken
    case = cases["truncated_mat"]
    path = root / case["path"]
    with pytest.raises(ReaderError) as ei:
        read_bpod_session(path)
    assert ei.value.path == path and case["reason"] in ei.value.reason
    assert path.name in str(ei.value)
    # the untouched sessions of the same catalogue read fine
    good = [s for s in m["sessions"] if s.get("broken_case") != "truncated_mat"]
    for s in good:
        assert read_bpod_session(root / s["behavior_file"]).n_trials == s["n_trials"]


def test_other_damage_raises(tmp_path, share):
    root, m = share
    data = (root / m["sessions"][0]["behavior_file"]).read_bytes()
    for n, cut in enumerate((0, 60, 127, 140, len(data) - 1)):
        p = tmp_path / f"cut{n}.mat"
        p.write_bytes(data[:cut])
        with pytest.raises(ReaderError) as ei:
            read_bpod_session(p)
        assert ei.value.path == p
        assert ("truncated" in ei.value.reason or "empty" in ei.value.reason
                or "MATLAB" in ei.value.reason), ei.value.reason
    p = tmp_path / "garbage.mat"
    p.write_bytes(data[:128] + bytes(range(256)) * 8)
    with pytest.raises(ReaderError):
        read_bpod_session(p)
    with pytest.raises(ReaderError, match="does not exist"):
        read_bpod_session(tmp_path / "nope.mat")


# ----------------------------------------------------------------------------- DLC
def independent_csv(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    parts = lines[1].split(",")[1:]
    return parts, np.loadtxt(path, delimiter=",", skiprows=3, ndmin=2)


def test_trial_maps(share):
    root, m = share
    n = 0
    tracked = [s for s in m["sessions"] if s["tracking"]]
    assert [s["h2o"] for s in tracked] == [s["h2o"] for s in m["sessions"] if s["registered"]]
    for s in tracked:
        for cam, c in s["tracking"]["cameras"].items():
            tmap = read_trial_map(root / c["trial_map"])
            assert tmap == {t["file_index"]: t["trial"] for t in c["trials"]}
            assert len(tmap) < s["n_trials"]  # some trials not filmed
            n += 1
    assert n == 2 * len(tracked) == 8


def test_dlc_csvs_match_manifest(share):
    root, m = share
    n = 0
    for s in m["sessions"]:
        tr = s["tracking"]
        if tr is None:  # the unregistered h2o has behaviour only
            assert not s["registered"]
            continue
        bpod = {t["number"]: t for t in s["trials"]}
        mmddyy = dt.date.fromisoformat(s["date"]).strftime("%m%d%y")
        for cam, c in tr["cameras"].items():
            for t in c["trials"]:
                path = root / t["csv"]
                assert parse_dlc_filename(path) == (s["h2o"], mmddyy, cam, t["file_index"])
                track = read_dlc_csv(path)
                assert track.n_frames == t["frames"]
                assert track.n_frames == round((bpod[t["trial"]]["end"]
                                                - bpod[t["trial"]]["start"]) * tr["fps"])
                assert np.array_equal(track.frame_index, np.arange(t["frames"]))
                assert track.scorer.startswith("DLC_resnet50_") and cam in track.scorer
                assert list(track.parts) == list(MAP_FEATURES)
                names, data = independent_csv(path)
                for k, part in enumerate(BODY_PARTS):
                    assert names[3 * k] == part
                    x, y, lik = track.parts[FEATURE_OF_PART[part]]
                    for j, arr in enumerate((x, y, lik)):
                        assert arr.dtype == np.float64 and arr.shape == (t["frames"],)
                        np.testing.assert_allclose(arr, data[:, 1 + 3 * k + j],
                                                   rtol=0, atol=1e-12)
                # tongue seen only within 60 ms after a lick (ties tracking to behaviour)
                licks = np.array(bpod[t["trial"]]["licks_left"] + bpod[t["trial"]]["licks_right"])
                tt = np.arange(t["frames"]) / tr["fps"]
                near = np.zeros(len(tt), bool)
                for lk in licks:
                    near |= (tt >= lk) & (tt < lk + 0.06)
                lik = track.parts["tongue"][2]
                assert (lik[near] >= 0.9).all() and (lik[~near] <= 0.1).all()
                n += 1
    assert n > 10


def test_dlc_missing_bodypart(broken):
    root, cases, _ = broken
    case = cases["dlc_missing_bodypart"]
    path = root / case["path"]
    with pytest.raises(ReaderError) as ei:
        read_dlc_csv(path)
    assert ei.value.path == path and case["reason"] in ei.value.reason
    assert "missing" in ei.value.reason and path.name in str(ei.value)
    ok = read_dlc_csv(path, required_parts=("nose", "jaw"))
    assert "tongue" not in ok.parts and set(ok.parts) == set(MAP_FEATURES) - {"tongue"}


def _first_csv(share) -> Path:
    root, m = share
    return root / m["sessions"][0]["tracking"]["cameras"]["side"]["trials"][0]["csv"]


def test_multi_animal_header(share, tmp_path):
    src = _first_csv(share)
    ref = read_dlc_csv(src)
    lines = src.read_text().splitlines(True)
    n_cols = len(lines[1].split(",")) - 1
    one = tmp_path / "ma_one.csv"
    one.write_text(lines[0] + "individuals," + ",".join(["mouse1"] * n_cols) + "\n"
                   + "".join(lines[1:]))
    got = read_dlc_csv(one)
    assert got.n_frames == ref.n_frames and list(got.parts) == list(ref.parts)
    for part in ref.parts:
        for a, b in zip(got.parts[part], ref.parts[part]):
            np.testing.assert_array_equal(a, b)
    half = n_cols // 2  # nose, tongue, jaw -> mouse1; paws, lickport -> mouse2
    two = tmp_path / "ma_two.csv"
    two.write_text(lines[0] + "individuals," + ",".join(["mouse1"] * half + ["mouse2"] * half)
                   + "\n" + "".join(lines[1:]))
    with pytest.raises(ReaderError, match="several individuals"):
        read_dlc_csv(two)
    m1 = read_dlc_csv(two, required_parts=("nose", "tongue", "jaw"), individual="mouse1")
    assert list(m1.parts) == ["nose", "tongue", "jaw"]
    np.testing.assert_array_equal(m1.parts["jaw"][1], ref.parts["jaw"][1])
    with pytest.raises(ReaderError, match="left_paw"):
        read_dlc_csv(two, individual="mouse1")


def test_old_map_part_names_and_bad_files(share, tmp_path):
    src = _first_csv(share)
    ref = read_dlc_csv(src)
    text = src.read_text().replace("left_paw", "paw_left").replace("right_paw", "paw_right")
    old = tmp_path / "old.csv"
    old.write_text(text)
    got = read_dlc_csv(old)
    np.testing.assert_array_equal(got.parts["left_paw"][0], ref.parts["left_paw"][0])
    np.testing.assert_array_equal(got.parts["right_paw"][2], ref.parts["right_paw"][2])

    lines = src.read_text().splitlines(True)
    no_hdr = tmp_path / "no_header.csv"
    no_hdr.write_text("".join(lines[3:]))
    with pytest.raises(ReaderError, match="scorer"):
        read_dlc_csv(no_hdr)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ReaderError, match="empty"):
        read_dlc_csv(empty)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines[:4]) + "1,abc" + ",1.0" * (len(BODY_PARTS) * 3 - 1) + "\n")
    with pytest.raises(ReaderError, match="not numeric"):
        read_dlc_csv(bad)

    tm = tmp_path / "dl30_040318_side.txt"
    tm.write_text("0\t1\n1\t2\n\n")
    assert read_trial_map(tm) == {0: 1, 1: 2}
    tm.write_text("0\t1\nfoo\t2\n")
    with pytest.raises(ReaderError, match="line 2"):
        read_trial_map(tm)
    tm.write_text("0\t1\n0\t2\n")
    with pytest.raises(ReaderError, match="listed twice"):
        read_trial_map(tm)
    with pytest.raises(ReaderError, match="does not exist"):
        read_trial_map(tmp_path / "none.txt")


def test_parse_dlc_filename_variants():
    assert parse_dlc_filename(
        "dl59_041718_2_side_face_12-0000DLC_resnet_50_licking-sideAug10shuffle1_1030000.csv"
    ) == ("dl59", "041718", "side_face", 12)
    assert parse_dlc_filename(
        "tw5_010218_bottom_7-0000DLC_resnet50_MAP_bottomJan18shuffle1_1030000_filtered.csv"
    ) == ("tw5", "010218", "bottom", 7)
    for bad in ("dl59_041718_side_12-0000.csv", "dl59_0417_side_12-0000DLC_x.csv",
                "dl59_041718_side_12-0000DLC_resnet50_x.h5", "dl59_041718_side.txt"):
        assert parse_dlc_filename(bad) is None, bad

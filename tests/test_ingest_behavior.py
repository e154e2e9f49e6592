"""Behaviour and tracking ingest against the simulator's ground truth."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tests.conftest import use_share_paths, wipe_pipeline_data


@pytest.fixture(scope="module")
def ingested(modules, tiny_share):
    """The tiny share scanned and ingested once (behaviour, then tracking)."""
    from ingest import behavior, share, tracking
    from ingest.runner import run_ingest
    from pipeline.subject_loader import load_subject_file

    root, manifest = tiny_share
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    scans = share.scan(["behavior", "tracking"])
    summaries = {"behavior": run_ingest(behavior.BehaviorIngest, progress=False)}
    summaries["tracking"] = run_ingest(tracking.TrackingIngest, progress=False)
    yield {"root": root, "manifest": manifest, "scans": scans, "summaries": summaries, "modules": modules}
    wipe_pipeline_data(modules)


def registered(manifest) -> list[dict]:
    return [s for s in manifest["sessions"] if s["registered"]]


def session_key(experiment, s) -> dict:
    return {"subject_id": s["subject_id"], "session": s["session_number"]}


def test_sessions_per_subject_and_numbering(ingested):
    experiment = ingested["modules"]["experiment"]
    manifest = ingested["manifest"]
    expected = registered(manifest)
    assert ingested["summaries"]["behavior"].inserted == len(expected)
    assert ingested["summaries"]["behavior"].failed == 0
    per_subject = Counter(s["subject_id"] for s in expected)
    got = Counter(experiment.Session().to_arrays("subject_id").tolist())
    assert got == per_subject
    for s in expected:
        row = (experiment.Session & session_key(experiment, s)).to_dicts()
        assert len(row) == 1, s
        assert str(row[0]["session_date"]) == s["date"]
    # two sessions on one day are two sessions
    days = Counter((s["subject_id"], s["date"]) for s in expected)
    assert max(days.values()) == 2
    (subject, date), _ = days.most_common(1)[0]
    assert len(experiment.Session & {"subject_id": subject} & f"session_date = '{date}'") == 2


def test_trials_outcomes_licks_and_notes(ingested):
    experiment = ingested["modules"]["experiment"]
    for s in registered(ingested["manifest"]):
        key = session_key(experiment, s)
        trials = [t for t in s["trials"] if t["protocol_type"] >= 3]
        assert len(experiment.SessionTrial & key) == s["n_trials_ingestable"] == len(trials)
        behavior = {r["trial"]: r for r in (experiment.BehaviorTrial & key).to_dicts()}
        assert Counter(r["outcome"] for r in behavior.values()) == Counter(t["outcome"] for t in trials)
        for t in trials:
            b = behavior[t["number"]]
            expected_early = "early" if t["early_lick"] else "no early"
            assert (b["trial_instruction"], b["early_lick"], bool(b["auto_water"])) == (t["instruction"], expected_early, t["auto_water"])
            licks = Counter((experiment.ActionEvent & key & {"trial": t["number"]}).to_arrays("action_event_type").tolist())
            assert licks["left lick"] == len(t["licks_left"]) and licks["right lick"] == len(t["licks_right"])
            note = (experiment.TrialNote & key & {"trial": t["number"], "trial_note_type": "bitcode"}).to_dicts()[0]
            assert int(note["trial_note"]) == t["bitcode"]
        training = [t["number"] for t in s["trials"] if t["protocol_type"] < 3]
        assert not (experiment.SessionTrial & key & [{"trial": n} for n in training])


def test_event_times_to_a_microsecond(ingested):
    experiment = ingested["modules"]["experiment"]
    checked = 0
    for s in registered(ingested["manifest"]):
        key = session_key(experiment, s)
        starts = {r["trial"]: r for r in (experiment.SessionTrial & key).to_dicts()}
        for t in (t for t in s["trials"] if t["protocol_type"] >= 3):
            assert abs(float(starts[t["number"]]["start_time"]) - t["start"]) < 1e-6
            assert abs(float(starts[t["number"]]["stop_time"]) - t["end"]) < 1e-6
            events = {e["trial_event_type"]: e for e in (experiment.TrialEvent & key & {"trial": t["number"]}).to_dicts()}
            go = events["go"]
            assert abs(float(go["trial_event_time"]) - t["go_cue"]) < 1e-6
            for event_type, state in (("presample", "PreSamplePeriod"), ("sample", "SamplePeriod"), ("delay", "DelayPeriod")):
                last_visit = t["states"][state][-1]
                assert abs(float(events[event_type]["trial_event_time"]) - last_visit[0]) < 1e-6
                assert abs(float(events[event_type]["duration"]) - (last_visit[1] - last_visit[0])) < 1e-6
            lick_times = sorted(float(x) for x in (experiment.ActionEvent & key & {"trial": t["number"]}).to_arrays("action_event_time"))
            assert np.allclose(lick_times, sorted(t["licks_left"] + t["licks_right"]), atol=1e-6)
            checked += 1
    assert checked > 10


def test_photostim_trials(ingested):
    experiment = ingested["modules"]["experiment"]
    expected = {(s["subject_id"], s["session_number"], t["number"]): t["stim_code"]
                for s in registered(ingested["manifest"]) for t in s["trials"]
                if t["protocol_type"] >= 3 and t["stim_code"]}
    got = {(r["subject_id"], r["session"], r["trial"]): r["photo_stim"] for r in experiment.PhotostimEvent().to_dicts()}
    assert got == expected and len(got) > 0
    hemispheres = {r["photo_stim"]: r["hemisphere"] for r in experiment.Photostim().to_dicts()}
    assert {hemispheres[c] for c in got.values()} <= {"left", "right", "both"}
    assert hemispheres.get(4, "left") == "left" and hemispheres.get(5, "right") == "right"


def test_unregistered_h2o_reported_once_not_an_error(ingested):
    from ingest.behavior import unregistered_report
    from ingest.commands import error_lines

    unregistered = ingested["manifest"]["unregistered_h2o"]
    lines = unregistered_report()
    assert len(lines) == len(unregistered) == 1
    files = sum(1 for s in ingested["manifest"]["sessions"] if s["h2o"] == unregistered[0])
    assert lines[0].startswith(f"not ingested: {files} behaviour file(s) of water-restriction number {unregistered[0]}")
    assert not [line for line in error_lines() if unregistered[0] in line]


def test_running_twice_inserts_nothing(ingested):
    from ingest import behavior, share, tracking
    from ingest.runner import run_ingest

    experiment, tracking_schema = ingested["modules"]["experiment"], ingested["modules"]["tracking"]
    before = (len(experiment.Session()), len(experiment.TrialEvent()), len(tracking_schema.Tracking()))
    reports = share.scan(["behavior", "tracking"])
    assert all(not r.new and not r.changed and not r.vanished for r in reports)
    again = [run_ingest(behavior.BehaviorIngest, progress=False), run_ingest(tracking.TrackingIngest, progress=False)]
    assert [s.inserted for s in again] == [0, 0]
    assert (len(experiment.Session()), len(experiment.TrialEvent()), len(tracking_schema.Tracking())) == before


def test_tracking_frames_and_arrays(ingested):
    tracking_schema, experiment = ingested["modules"]["tracking"], ingested["modules"]["experiment"]
    root = ingested["root"]
    assert ingested["summaries"]["tracking"].failed == 0
    expected_rows = 0
    digest_db, digest_csv = hashlib.md5(), hashlib.md5()
    for s in registered(ingested["manifest"]):
        if not s["tracking"]:
            continue
        key = session_key(experiment, s)
        ingestable = {t["number"] for t in s["trials"] if t["protocol_type"] >= 3}
        for camera, camera_entry in s["tracking"]["cameras"].items():
            entries = camera_entry["trials"]
            device = (tracking_schema.TrackingDevice & {"tracking_position": camera}).to_dicts()[0]["tracking_device"]
            for entry in sorted(entries, key=lambda e: e["trial"]):
                rows = (tracking_schema.Tracking & key & {"trial": entry["trial"], "tracking_device": device}).to_dicts()
                if entry["trial"] not in ingestable:
                    assert rows == []
                    continue
                expected_rows += 1
                assert rows[0]["tracking_samples"] == entry["frames"]
                nose = (tracking_schema.Tracking.NoseTracking & key & {"trial": entry["trial"], "tracking_device": device}).to_dicts()[0]
                frame = pd.read_csv(root / entry["csv"], header=[0, 1, 2], index_col=0)
                scorer = frame.columns.get_level_values(0)[0]
                digest_db.update(np.ascontiguousarray(nose["nose_x"], float).tobytes())
                digest_csv.update(frame[(scorer, "nose", "x")].to_numpy(float).tobytes())
    assert expected_rows == len(tracking_schema.Tracking()) > 0
    assert digest_db.hexdigest() == digest_csv.hexdigest()


def test_number_registered_later_is_picked_up(ingested):
    """Files of an unregistered h2o are only counted; once it is registered, the next scan keys them."""
    from ingest import behavior, share
    from ingest.runner import run_ingest

    lab, experiment = ingested["modules"]["lab"], ingested["modules"]["experiment"]
    h2o = ingested["manifest"]["unregistered_h2o"][0]
    assert not (behavior.BehaviorSessionFile & {"water_restriction_number": h2o})
    lab.Subject.insert1({"subject_id": 999001, "username": "daveliu", "cage_number": 1, "sex": "F", "animal_source": "Other"})
    lab.WaterRestriction.insert1({"subject_id": 999001, "water_restriction_number": h2o, "wr_cage_number": 1,
                                  "wr_start_date": "2018-01-01", "wr_start_weight": 20})
    try:
        report = share.scan(["behavior"])[0]
        assert not report.new  # nothing new on disk ...
        files = sum(1 for s in ingested["manifest"]["sessions"] if s["h2o"] == h2o)
        assert len(behavior.BehaviorSessionFile & {"water_restriction_number": h2o}) == files  # ... but now keyed
        summary = run_ingest(behavior.BehaviorIngest, progress=False)
        assert summary.inserted == files and summary.failed == 0
        assert len(experiment.Session & {"subject_id": 999001}) == files
        assert behavior.unregistered_report() == []
    finally:
        (experiment.Session & {"subject_id": 999001}).delete(prompt=False)
        (behavior.BehaviorSessionFile & {"water_restriction_number": h2o}).delete(prompt=False)
        (lab.Subject & {"subject_id": 999001}).delete(prompt=False)

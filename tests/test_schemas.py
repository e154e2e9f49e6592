"""Every schema declares on this backend and round-trips rows with MAP's keys and types."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np

from pipeline import lab as lab_module


def _time_of_day(value) -> dt.time:
    """MySQL returns TIME as a timedelta, PostgreSQL as a time: compare as time of day."""
    if isinstance(value, dt.timedelta):
        return (dt.datetime.min + value).time()
    return value


def test_lookup_contents_as_map(modules):
    experiment, lab, ephys = modules["experiment"], modules["lab"], modules["ephys"]
    assert set(experiment.Outcome().to_arrays("outcome")) == {"hit", "miss", "ignore"}
    assert {"left", "right"} <= set(experiment.TrialInstruction().to_arrays("trial_instruction"))
    assert {"presample", "sample", "delay", "go", "trialend"} <= set(experiment.TrialEventType().to_arrays("trial_event_type"))
    assert ("audio delay", 1) in {(r["task"], r["task_protocol"]) for r in experiment.TaskProtocol().to_dicts()}
    assert {"ALM", "vS1", "M1"} <= set(lab.BrainArea().to_arrays("brain_area"))
    assert {"kilosort2", "jrclust_v4"} <= set(ephys.ClusteringMethod().to_arrays("clustering_method"))
    periods = {r["period"]: (r["period_start"], r["period_end"]) for r in experiment.Period().to_dicts()}
    assert periods["delay"] == (-1.2, 0.0)


def test_probe_geometry_from_probeinterface(modules):
    lab = modules["lab"]
    counts = {t: len(lab.ProbeType.Electrode & {"probe_type": t}) for t in lab.NEUROPIXELS_PART_NUMBERS}
    assert counts == {
        "neuropixels 1.0 - 3A": 960,
        "neuropixels 1.0 - 3B": 960,
        "neuropixels 2.0 - SS": 1280,
        "neuropixels 2.0 - MS": 5120,
    }
    four_shank = lab.ProbeType.Electrode & {"probe_type": "neuropixels 2.0 - MS"}
    shanks = four_shank.to_arrays("shank")
    assert sorted(set(shanks.tolist())) == [1, 2, 3, 4]
    # NP2.0: 15 um row pitch, 32 um column pitch, shanks 250 um apart
    first = (four_shank & "electrode in (1, 3, 1281)").to_dicts(order_by="electrode")
    assert [(r["x_coord"], r["y_coord"]) for r in first] == [(0.0, 0.0), (0.0, 15.0), (250.0, 0.0)]
    np1 = (lab.ProbeType.Electrode & {"probe_type": "neuropixels 1.0 - 3B"}).to_arrays("y_coord")
    assert np1.max() == 9580.0  # 480 rows, 20 um apart


def test_lab_round_trip(clean_lab):
    lab = clean_lab["lab"]
    lab.Person.insert1({"username": "daveliu", "fullname": "Dave Liu"})
    lab.Rig.insert1({"rig": "RRig", "room": "2w.334", "rig_description": "ephys rig"})
    lab.Subject.insert1({"subject_id": 407513, "username": "daveliu", "cage_number": 154522,
                         "date_of_birth": "2018-01-01", "sex": "M", "animal_source": "Jackson Labs"})
    lab.Subject.Strain.insert1({"subject_id": 407513, "animal_strain": "C57BL/6J"})
    lab.WaterRestriction.insert1({"subject_id": 407513, "water_restriction_number": "dl36", "wr_cage_number": 154522,
                                  "wr_start_date": "2018-02-01", "wr_start_weight": 22.5})
    lab.Surgery.insert1({"subject_id": 407513, "surgery_id": 1, "username": "daveliu",
                         "start_time": "2018-01-20 10:00:00", "end_time": "2018-01-20 11:30:00",
                         "surgery_description": "headbar"})
    lab.Surgery.Procedure.insert1({"subject_id": 407513, "surgery_id": 1, "procedure_id": 1, "skull_reference": "Bregma",
                                   "ap_location": 2500, "ml_location": -1500, "dv_location": 0,
                                   "surgery_procedure_description": "craniotomy"})
    subject = (lab.Subject & {"subject_id": 407513}).to_dicts()[0]
    assert subject["date_of_birth"] == dt.date(2018, 1, 1) and subject["sex"] == "M"
    wr = (lab.WaterRestriction & "water_restriction_number = 'dl36'").to_dicts()[0]
    assert wr["subject_id"] == 407513 and Decimal(wr["wr_start_weight"]) == Decimal("22.500")
    assert len(lab.Subject * lab.WaterRestriction & "sex = 'M'") == 1  # MAP's everyday join works in DataJoint 2
    surgery = (lab.Surgery * lab.Surgery.Procedure).to_dicts()[0]
    assert surgery["start_time"] == dt.datetime(2018, 1, 20, 10, 0) and Decimal(surgery["ml_location"]) == Decimal("-1500")
    assert len(lab.Subject.Strain & {"subject_id": 407513}) == 1

    hash_a = lab.electrode_config_hash("neuropixels 2.0 - MS", [3, 1, 2])
    assert hash_a == lab.electrode_config_hash("neuropixels 2.0 - MS", [1, 2, 3]) and len(hash_a) == 32
    lab.ElectrodeConfig.insert1({"probe_type": "neuropixels 2.0 - MS", "electrode_config_name": "bank0",
                                 "electrode_config_hash": hash_a})
    lab.ElectrodeConfig.ElectrodeGroup.insert1({"probe_type": "neuropixels 2.0 - MS", "electrode_config_name": "bank0", "electrode_group": 0})
    lab.ElectrodeConfig.Electrode.insert(
        [{"probe_type": "neuropixels 2.0 - MS", "electrode_config_name": "bank0", "electrode_group": 0, "electrode": e} for e in (1, 2, 3)]
    )
    assert (lab.ElectrodeConfig & {"electrode_config_hash": hash_a}).to_dicts()[0]["electrode_config_name"] == "bank0"
    assert len(lab.ElectrodeConfig.Electrode * lab.ProbeType.Electrode & "shank = 1" & {"electrode_config_name": "bank0"}) == 3
    (lab.ElectrodeConfig & {"electrode_config_name": "bank0"}).delete(prompt=False)


def test_experiment_round_trip(clean_lab):
    lab, experiment = clean_lab["lab"], clean_lab["experiment"]
    lab.Person.insert1({"username": "tw", "fullname": "T W"})
    lab.Rig.insert1({"rig": "RRig2", "room": "2w.334", "rig_description": "rig 2"})
    lab.Subject.insert1({"subject_id": 1, "username": "tw", "cage_number": 1, "sex": "F", "animal_source": "Other"})
    session = {"subject_id": 1, "session": 1}
    experiment.Session.insert1({**session, "session_date": "2023-08-23", "session_time": "14:22:05", "username": "tw", "rig": "RRig2"})
    experiment.ProjectSession.insert1({**session, "project_name": "MAP"})
    experiment.SessionComment.insert1({**session, "session_comment": "two probes"})
    trial = {**session, "trial": 1}
    experiment.SessionTrial.insert1({**trial, "trial_uid": 10001, "start_time": 12.5, "stop_time": 18.25}, allow_direct_insert=True)
    experiment.BehaviorTrial.insert1({**trial, "task": "audio delay", "task_protocol": 1, "trial_instruction": "left",
                                      "early_lick": "no early", "outcome": "hit", "auto_water": True}, allow_direct_insert=True)
    experiment.TrialEvent.insert([{**trial, "trial_event_id": i, "trial_event_type": t, "trial_event_time": tt, "duration": d}
                                  for i, (t, tt, d) in enumerate([("sample", 0.5, 1.2), ("delay", 1.7, 1.2), ("go", 2.9, 0.1)])],
                                 allow_direct_insert=True)
    experiment.ActionEvent.insert1({**trial, "action_event_id": 0, "action_event_type": "left lick", "action_event_time": 3.1234},
                                   allow_direct_insert=True)
    experiment.TrialNote.insert1({**trial, "trial_note_type": "bitcode", "trial_note": "0101010101"}, allow_direct_insert=True)
    experiment.Photostim.insert1({**session, "photo_stim": 1, "photostim_device": "OBIS470", "brain_area": "ALM",
                                  "hemisphere": "left", "skull_reference": "Bregma", "duration": 0.5,
                                  "waveform": np.linspace(0, 1, 50)})
    experiment.PhotostimTrial.insert1(trial, allow_direct_insert=True)
    experiment.PhotostimEvent.insert1({**trial, "photostim_event_id": 0, "photo_stim": 1, "photostim_event_time": 1.7, "power": 4.5},
                                      allow_direct_insert=True)

    got = (experiment.Session & session).to_dicts()[0]
    assert got["session_date"] == dt.date(2023, 8, 23) and _time_of_day(got["session_time"]) == dt.time(14, 22, 5)
    events = (experiment.TrialEvent & trial).to_dicts(order_by="trial_event_id")
    assert [(e["trial_event_type"], Decimal(e["trial_event_time"])) for e in events] == [
        ("sample", Decimal("0.5")), ("delay", Decimal("1.7")), ("go", Decimal("2.9"))]
    assert Decimal((experiment.ActionEvent & trial).to_dicts()[0]["action_event_time"]) == Decimal("3.1234")
    assert (experiment.TrialNote & trial).to_dicts()[0]["trial_note"] == "0101010101"
    waveform = (experiment.Photostim & session).to_dicts()[0]["waveform"]
    np.testing.assert_allclose(waveform, np.linspace(0, 1, 50))
    hits = experiment.BehaviorTrial & "outcome = 'hit'" & "trial_instruction = 'left'"
    assert len(hits) == 1 and bool(hits.to_dicts()[0]["auto_water"]) is True
    joined = experiment.Session * experiment.SessionTrial * experiment.PhotostimEvent
    assert Decimal(joined.to_dicts()[0]["power"]) == Decimal("4.5")


def test_other_schemas_round_trip(modules):
    ccf, ephys, histology, tracking, publication = (modules[m] for m in ("ccf", "ephys", "histology", "tracking", "publication"))
    assert (ccf.CCFLabel & {"ccf_label_id": 2}).to_dicts()[0]["ccf_resolution"] == 25
    assert "good" in set(ephys.UnitQualityType().to_arrays("unit_quality"))
    assert {"Pyr", "FS"} <= set(ephys.CellType().to_arrays("cell_type"))
    assert "ibl_alignment_gui" in set(histology.TrackSource().to_arrays("track_source"))
    side = (tracking.TrackingDevice & {"tracking_position": "side"}).to_dicts()[0]
    assert side["tracking_device"] == "Camera 0" and abs(float(side["sampling_rate"]) - 294.1176) < 1e-3
    assert (publication.FileType & {"file_type": "ephys-raw-ap-bin"}).to_dicts()[0]["file_glob"] == "*.ap.bin"
    alias = {"globus_alias": "round-trip-test"}
    publication.GlobusStorageLocation.insert1({**alias, "globus_endpoint": "5b875fda-4185-11e8-bb52-0ac6873fc732",
                                               "globus_path": "/4ElectrodeRig_Ephys"})
    try:
        assert (publication.GlobusStorageLocation & alias).to_dicts()[0]["globus_path"] == "/4ElectrodeRig_Ephys"
    finally:
        (publication.GlobusStorageLocation & alias).delete(prompt=False)


def test_schema_names_follow_the_prefix(modules):
    from tests.conftest import PREFIX

    assert {m.schema.database for m in modules.values()} == {f"{PREFIX}{name}" for name in modules}
    assert lab_module.schema.database == f"{PREFIX}lab"

"""Behaviour ingest: Bpod SessionData files -> experiment.Session and the trial-level tables.

The share scan turns every Bpod-named file into a :class:`BehaviorSessionFile` row keyed by what
the name says (water-restriction number and start time); :class:`BehaviorIngest` takes its keys
from there (registered h2os only), so populate never walks the share. One make() inserts one
whole session in one transaction: after a crash, either all of a session is in or none of it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datajoint as dj

from pipeline import bulk, experiment, lab
from pipeline.db import schema as _schema

from . import share
from .readers.behavior_rules import interpret_trial
from .readers.bpod import parse_bpod_filename, read_bpod_session

schema = _schema("ingest_behavior")

TASK, TASK_PROTOCOL = "audio delay", 1  # MAP's delay task
# MAP's photostim codes in SessionData.StimTrials: where the light went.
PHOTOSTIMS = {
    4: dict(photostim_device="OBIS470", brain_area="ALM", hemisphere="left", skull_reference="Bregma", duration=0.5),
    5: dict(photostim_device="OBIS470", brain_area="ALM", hemisphere="right", skull_reference="Bregma", duration=0.5),
    6: dict(photostim_device="OBIS470", brain_area="ALM", hemisphere="both", skull_reference="Bregma", duration=0.5),
}


@schema
class BehaviorSessionFile(dj.Manual):
    definition = """
    # a Bpod session file found by the share scan, keyed by what its name says
    water_restriction_number : varchar(16)
    session_stamp : char(15)           # YYYYMMDD_HHMMSS from the file name (a datetime key breaks
    ---                                # DataJoint 2.3's job tables on PostgreSQL)
    session_datetime : datetime        # start of the session
    -> share.ShareFile
    protocol : varchar(64)             # Bpod protocol folder/name part
    """


@share.after_scan("behavior")
def record_session_files(root: dict, report: share.RootReport) -> None:
    """Turn Bpod files of registered water-restriction numbers into session-file rows.

    New and changed files are looked at; so are all files of a number registered since the last
    scan. Files of unregistered numbers get no row: ``unregistered_report`` counts them instead.
    A changed file's recorded ingest error is cleared, so a fixed file gets another try.
    """
    registered = set(lab.WaterRestriction().to_arrays("water_restriction_number").tolist())
    keyed = {h2o for (h2o,) in bulk.select_rows(BehaviorSessionFile, ("water_restriction_number",))}
    candidates = report.new + report.changed
    newly_registered = registered - keyed
    if newly_registered:
        candidates += [rel for (rel,) in bulk.select_rows(share.ShareFile, ("relpath",), {"root_hash": root["root_hash"], "status": "present"})
                       if rel.split("/", 1)[0] in newly_registered]
    known = set(bulk.select_rows(BehaviorSessionFile, ("water_restriction_number", "session_stamp")))
    rows = []
    for rel in candidates:
        parsed = parse_bpod_filename(rel)
        if parsed is None or parsed.h2o not in registered:
            continue
        stamp = f"{parsed.datetime:%Y%m%d_%H%M%S}"
        if (parsed.h2o, stamp) in known:
            continue
        known.add((parsed.h2o, stamp))
        rows.append((parsed.h2o, stamp, parsed.datetime, root["root_hash"], share.path_hash(rel), parsed.protocol[:64]))
    bulk.insert_rows(BehaviorSessionFile, SESSION_FILE_COLUMNS, rows)
    changed = [{"root_hash": root["root_hash"], "file_hash": share.path_hash(rel)} for rel in report.changed]
    if changed:
        keys = (BehaviorSessionFile & changed).proj().to_dicts()
        if keys:
            from pipeline.jobs import clear_errors

            clear_errors(BehaviorIngest, keys)


SESSION_FILE_COLUMNS = ("water_restriction_number", "session_stamp", "session_datetime", "root_hash", "file_hash", "protocol")


def registered_files() -> dj.expression.QueryExpression:
    """Session files of registered water-restriction numbers, whose file is still there."""
    present = share.ShareFile & {"status": "present"}
    return (BehaviorSessionFile & present).restrict(lab.WaterRestriction.proj("water_restriction_number"), semantic_check=False)


@schema
class BehaviorIngest(dj.Imported):
    definition = """
    # a behaviour session loaded from its Bpod file
    -> BehaviorSessionFile
    ---
    -> experiment.Session
    """

    class BehaviorFile(dj.Part):
        definition = """
        -> master
        behavior_file : varchar(255)     # file path relative to its share root
        ---
        file_size : int64
        file_md5 : char(32)
        """

    @property
    def key_source(self):
        return registered_files().proj()

    def make(self, key: dict) -> None:
        source = (BehaviorSessionFile * share.ShareFile * share.ShareRoot & key).to_dicts()[0]
        path = Path(source["root_path"]) / source["relpath"]
        content = path.read_bytes()
        session = read_bpod_session(path)
        subject = (lab.WaterRestriction * lab.Subject.proj("username")
                   & {"water_restriction_number": key["water_restriction_number"]}).to_dicts()[0]
        if not subject["username"]:
            raise dj.DataJointError(
                f"{path}: subject {subject['subject_id']} has no responsible person (lab.Subject.username); "
                "add one with mapshell load-subjects")
        when = source["session_datetime"]
        session_key = {"subject_id": subject["subject_id"], "session": session_number(subject["subject_id"], key["session_stamp"])}
        experiment.Session.insert1({**session_key, "session_date": when.date(), "session_time": when.time(),
                                    "username": subject["username"], "rig": ensure_rig(source["rig"])})
        rows = trial_rows(session_key, session)
        for table, table_rows in ((experiment.SessionTrial, rows["trial"]), (experiment.BehaviorTrial, rows["behavior"]),
                                  (experiment.TrialNote, rows["note"]), (experiment.TrialEvent, rows["event"]),
                                  (experiment.ActionEvent, rows["action"])):
            table.insert(table_rows, allow_direct_insert=True)
        if rows["photostim_trial"]:
            experiment.Photostim.insert([{**session_key, "photo_stim": code, **PHOTOSTIMS[code]}
                                         for code in sorted(rows["photostim_codes"])])
            experiment.PhotostimTrial.insert(rows["photostim_trial"], allow_direct_insert=True)
            experiment.PhotostimEvent.insert(rows["photostim_event"], allow_direct_insert=True)
        self.insert1({**key, **session_key})
        self.BehaviorFile.insert1({**key, "behavior_file": source["relpath"][:255], "file_size": len(content),
                                   "file_md5": hashlib.md5(content).hexdigest()})


def session_number(subject_id: int, stamp: str) -> int:
    """MAP numbers sessions 1, 2, ... per subject. Here the number is the session's rank, by start
    time, among the subject's known session files, so parallel workers agree without a race; a
    file that turns up after later sessions were numbered gets the next free number."""
    h2o = (lab.WaterRestriction & {"subject_id": subject_id}).to_arrays("water_restriction_number")[0]
    stamps = (BehaviorSessionFile & {"water_restriction_number": h2o}).to_arrays("session_stamp")
    rank = 1 + sum(1 for s in stamps if s < stamp)
    taken = set((experiment.Session & {"subject_id": subject_id}).to_arrays("session").tolist())
    return rank if rank not in taken else max(taken) + 1


def ensure_rig(rig: str) -> str:
    if not (lab.Rig & {"rig": rig}):
        lab.Rig.insert1({"rig": rig, "room": "unknown", "rig_description": "added by behaviour ingest from the share configuration"})
    return rig


def trial_uid(session_key: dict, trial: int) -> int:
    """Unique across sessions and animals without a counter: subject, session and trial digits."""
    return session_key["subject_id"] * 100_000_000 + session_key["session"] * 10_000 + trial


def trial_rows(session_key: dict, session) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in ("trial", "behavior", "note", "event", "action", "photostim_trial", "photostim_event")}
    rows["photostim_codes"] = set()
    for trial in session.trials:
        record = interpret_trial(trial)
        if record is None:  # training trial (ProtocolType < 3): MAP skips these
            continue
        tkey = {**session_key, "trial": trial.number}
        rows["trial"].append({**tkey, "trial_uid": trial_uid(session_key, trial.number),
                              "start_time": record.start_time, "stop_time": record.stop_time})
        rows["behavior"].append({**tkey, "task": TASK, "task_protocol": TASK_PROTOCOL,
                                 "trial_instruction": record.instruction, "early_lick": record.early_lick,
                                 "outcome": record.outcome, "auto_water": record.auto_water, "free_water": record.free_water})
        rows["note"] += [{**tkey, "trial_note_type": kind, "trial_note": str(text)} for kind, text in record.notes]
        rows["event"] += [{**tkey, "trial_event_id": i, "trial_event_type": e.trial_event_type,
                           "trial_event_time": e.time, "duration": e.duration} for i, e in enumerate(record.trial_events)]
        rows["action"] += [{**tkey, "action_event_id": i, "action_event_type": a.action_event_type, "action_event_time": a.time}
                           for i, a in enumerate(record.action_events)]
        code = getattr(trial, "stim_code", 0)
        if code in PHOTOSTIMS:
            rows["photostim_codes"].add(code)
            rows["photostim_trial"].append(tkey)
            sample = record.event("sample")
            rows["photostim_event"].append({**tkey, "photostim_event_id": 0, "photo_stim": code,
                                            "photostim_event_time": sample.time if sample else 0.0, "power": 0.0})
    return rows


def unregistered_report() -> list[str]:
    """Bpod files of water-restriction numbers nobody registered: one line per h2o, not errors."""
    registered = set(lab.WaterRestriction().to_arrays("water_restriction_number").tolist())
    counts: dict[str, int] = {}
    for root in (share.ShareRoot & {"data_kind": "behavior"}).to_dicts():
        for (rel,) in bulk.select_rows(share.ShareFile, ("relpath",), {"root_hash": root["root_hash"], "status": "present"}):
            parsed = parse_bpod_filename(rel)
            if parsed is not None and parsed.h2o not in registered:
                counts[parsed.h2o] = counts.get(parsed.h2o, 0) + 1
    return [f"not ingested: {n} behaviour file(s) of water-restriction number {h2o}, which is not registered "
            f"(add it with mapshell load-subjects)" for h2o, n in sorted(counts.items())]

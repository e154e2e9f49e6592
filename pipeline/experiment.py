"""``experiment``: tasks, sessions, and the trial-level tables the behaviour ingest fills.

The trial-level tables are Imported, as in MAP, but have no ``make`` of their own: one
``ingest.behavior.BehaviorIngest`` make fills all of them for a session in one transaction.

Names, keys and attributes follow MAP's ``pipeline/experiment.py``.
"""

from __future__ import annotations

import datetime as dt

import datajoint as dj

from . import lab
from .db import schema as _schema

schema = _schema("experiment")


@schema
class Task(dj.Lookup):
    definition = """
    # Type of tasks
    task : varchar(12)                  # task type
    ---
    task_description : varchar(4000)
    """
    contents = [
        ("audio delay", "auditory delayed response task (2AFC)"),
        ("audio mem", "auditory working memory task"),
        ("s1 stim", "S1 photostimulation task (2AFC)"),
        ("foraging", "foraging task based on Bari-Cohen 2019"),
        ("foraging 3lp", "foraging task based on Bari-Cohen 2019 with variable delay period"),
    ]


@schema
class TaskProtocol(dj.Lookup):
    definition = """
    # SessionType
    -> Task
    task_protocol : int8                # task protocol
    ---
    task_protocol_description : varchar(4000)
    """
    contents = [
        ("audio delay", 1, "high tone vs. low tone"),
        ("s1 stim", 2, "mini-distractors"),
        ("s1 stim", 3, "full distractors, with 2 distractors (at different times) on some of the left trials"),
        ("s1 stim", 4, "full distractors"),
        ("s1 stim", 5, "mini-distractors, with different levels of the mini-stim during sample period"),
        ("s1 stim", 6, "full distractors; same as protocol 4 but with a no-chirp trial-type"),
        ("s1 stim", 7, "mini-distractors and full distractors (only at late delay)"),
        ("foraging", 100, "moving lickports, delay period, early lick punishment, sound GO cue then free choice"),
        ("foraging 3lp", 101, "moving lickports, delay period, early lick punishment, sound GO cue then free choice from three lickports"),
    ]


@schema
class Project(dj.Lookup):
    definition = """
    project_name : varchar(128)
    ---
    project_desc = '' : varchar(1000)
    publication = '' : varchar(256)     # e.g. publication doi
    """
    contents = [("MAP", "The Mesoscale Activity Map project", "")]


@schema
class Session(dj.Manual):
    definition = """
    -> lab.Subject
    session : int16                     # session number
    ---
    session_date : date
    session_time : time
    unique index (subject_id, session_date, session_time)
    -> lab.Person
    -> lab.Rig
    """


@schema
class ProjectSession(dj.Manual):
    definition = """
    -> Project
    -> Session
    """


@schema
class SessionComment(dj.Manual):
    definition = """
    -> Session
    ---
    session_comment : varchar(767)
    """


@schema
class SessionDetails(dj.Manual):
    definition = """
    -> Session
    ---
    session_weight : decimal(8,4)       # weight of the mouse at the beginning of the session
    session_water_earned : decimal(8,4) # water earned by the mouse during the session
    session_water_extra : decimal(8,4)  # extra water provided after the session
    """


@schema
class TrialInstruction(dj.Lookup):
    definition = """
    # Instruction to mouse
    trial_instruction : varchar(16)
    """
    contents = [("left",), ("right",), ("middle",), ("none",), ("non-performing",)]


@schema
class Outcome(dj.Lookup):
    definition = """
    outcome : varchar(32)
    """
    contents = [("hit",), ("miss",), ("ignore",)]


@schema
class EarlyLick(dj.Lookup):
    definition = """
    early_lick : varchar(32)
    ---
    early_lick_description : varchar(4000)
    """
    contents = [
        ("early", "early lick during sample and/or delay"),
        ("early, presample only", "early lick in the presample period, after the onset of the scheduled wave but before the sample period"),
        ("no early", ""),
    ]


@schema
class TrialEventType(dj.Lookup):
    definition = """
    trial_event_type : varchar(16)
    """
    contents = [
        (t,)
        for t in (
            "delay", "go", "sample", "presample", "trialend", "bitcodestart", "choice", "reward",
            "earlylick", "timeout", "videostart", "videoend", "bpodstart", "zaberready",
        )
    ]


@schema
class ActionEventType(dj.Lookup):
    definition = """
    action_event_type : varchar(32)
    ---
    action_event_description : varchar(1000)
    """
    contents = [
        ("left lick", ""),
        ("right lick", ""),
        ("middle lick", ""),
        ("left lick (lickport)", "left lick detected by the lickport"),
        ("right lick (lickport)", "right lick detected by the lickport"),
    ]


@schema
class TrialNoteType(dj.Lookup):
    definition = """
    trial_note_type : varchar(20)
    """
    contents = [("autolearn",), ("protocol #",), ("bad",), ("bitcode",), ("autoreward",), ("random_seed_start",)]


@schema
class Period(dj.Lookup):
    definition = """
    period : varchar(12)
    ---
    period_start : float32      # (s) start of this period relative to GO CUE
    period_end : float32        # (s) end of this period relative to GO CUE
    """
    contents = [("sample", -2.4, -1.2), ("delay", -1.2, 0.0), ("response", 0.0, 1.2)]


@schema
class Photostim(dj.Manual):
    definition = """
    -> Session
    photo_stim : int16
    ---
    -> lab.PhotostimDevice
    -> lab.BrainArea
    -> lab.Hemisphere
    -> lab.SkullReference
    ml_location = null : float32    # ml location in um relative to the skull reference
    ap_location = null : float32    # ap location in um relative to the skull reference
    dv_location = null : float32    # dv location in um relative to the brain surface
    duration = null : decimal(8,4)  # (s)
    waveform = null : <blob>        # normalized to maximal power
    """


@schema
class SessionTrial(dj.Imported):
    definition = """
    -> Session
    trial : int16                   # trial number (1-based indexing)
    ---
    trial_uid : int64               # unique across sessions and animals
    start_time : decimal(12,6)      # (s) relative to session beginning (MAP: decimal(9,4); here to 1 us)
    stop_time : decimal(12,6)       # (s) relative to session beginning
    """



@schema
class TrialNote(dj.Imported):
    definition = """
    -> SessionTrial
    -> TrialNoteType
    ---
    trial_note : varchar(255)
    """



@schema
class BehaviorTrial(dj.Imported):
    definition = """
    -> SessionTrial
    ---
    -> TaskProtocol
    -> TrialInstruction
    -> EarlyLick
    -> Outcome
    auto_water = 0 : bool
    free_water = 0 : bool
    """



@schema
class TrialEvent(dj.Imported):
    definition = """
    -> BehaviorTrial
    trial_event_id : int16
    ---
    -> TrialEventType
    trial_event_time : decimal(10,6)  # (s) from trial start, not session start (MAP: decimal(8,4))
    duration : decimal(10,6)          # (s)
    """



@schema
class ActionEvent(dj.Imported):
    definition = """
    -> BehaviorTrial
    action_event_id : int16
    ---
    -> ActionEventType
    action_event_time : decimal(10,6) # (s) from trial start (MAP: decimal(8,4))
    """



@schema
class PhotostimTrial(dj.Imported):
    definition = """
    -> SessionTrial
    """



@schema
class PhotostimEvent(dj.Imported):
    definition = """
    -> PhotostimTrial
    photostim_event_id : int16
    ---
    -> Photostim
    photostim_event_time : decimal(10,6)  # (s) from trial start
    power : decimal(8,3)                  # maximal power (mW)
    """



def time_of_day(value) -> dt.time:
    """A session_time as a time of day: MySQL returns TIME as a timedelta, PostgreSQL as a time."""
    return (dt.datetime.min + value).time() if isinstance(value, dt.timedelta) else value


def sessions_by_day(restriction=None) -> dict[tuple, dict]:
    """(water-restriction number, date, k) -> session key, where k counts a subject's sessions of
    that date by start time from 0: the same-day suffix rig folders carry (none for the first,
    ``_1`` for the second, ...). ``restriction`` limits the subjects, never the days' sessions."""
    from collections import defaultdict

    sessions = Session.proj("session_date", "session_time")
    if restriction is not None:
        subjects = (Session & restriction).proj().to_dicts()
        sessions = sessions & [{"subject_id": s["subject_id"]} for s in subjects]
    rows = (sessions * lab.WaterRestriction.proj("water_restriction_number")).to_dicts()
    days = defaultdict(list)
    for row in rows:
        days[(row["water_restriction_number"], row["session_date"])].append(row)
    return {(h2o, date, k): {"subject_id": row["subject_id"], "session": row["session"]}
            for (h2o, date), day in days.items()
            for k, row in enumerate(sorted(day, key=lambda r: time_of_day(r["session_time"])))}

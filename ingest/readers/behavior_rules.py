"""MAP's delay-task rules: a :class:`~ingest.readers.bpod.BpodTrial` -> what the experiment
tables hold (``BehaviorTrial``, ``TrialNote``, ``TrialEvent``, ``ActionEvent``).

Pure functions, no database. All times are relative to the trial start (as Bpod stores them);
``TrialRecord.start_time`` / ``stop_time`` are the Bpod session clock.

Rules (RIG_SHARE.md "Outcome rules" and MAP's ``pipeline/ingest/behavior.py``)
-----------------------------------------------------------------------------
* Training trials (``GUI.ProtocolType < 3``, or no ProtocolType at all) are skipped:
  :func:`interpret_trial` returns None, as MAP does.
* instruction: ``SessionData.TrialTypes`` 1 -> 'left', 0 -> 'right' (how the simulator and
  MAP's rigs encode it, ``GUI.Reversal == 1`` or absent); with ``GUI.Reversal == 2`` the
  mapping is swapped (1 -> 'right', 0 -> 'left'), as in MAP. Any other code -> 'none'.
* outcome: 'hit' if a reward state (GiveLeftDrop / GiveRightDrop, or a state named 'Reward'
  on older protocols) was visited; else 'miss' if TimeOut was visited and there was no early
  lick; else 'ignore'. (An early-lick trial that ends in TimeOut is therefore 'ignore'.)
* early_lick: 'early' if EarlyLickSample or EarlyLickDelay was visited, else 'no early'.
  (MAP's code additionally required ProtocolType >= 5; we do not gate on the protocol.)
* auto_water: ``GUI.Autowater``; free_water: always False (the delay task has no free-water
  state; the attribute exists for the foraging tasks).
* trial events ``(trial_event_type, time, duration)``, sorted by time:
  presample=PreSamplePeriod, sample=SamplePeriod, delay=DelayPeriod, go=ResponseCue,
  reward=first visit of a reward state, trialend=TrialEnd (time = state entry, duration =
  exit - entry as measured by Bpod), and choice = first lick (Port1In or Port2In) at or after
  the go-cue onset, duration 0. Note MAP's old code used the GUI's SamplePeriod /
  DelayPeriod / AnswerPeriod as durations of sample / delay / go and 0 for trialend; we
  report what the state machine measured (``BpodTrial.gui`` still carries the GUI values).
* states visited several times: an early lick restarts the epoch, so SamplePeriod /
  DelayPeriod get several rows. By default (``visit='last'``) the LAST visit is kept: it is
  the epoch the animal actually completed, the one that ends at the go cue. ``visit='first'``
  keeps the first, ``visit='all'`` emits one event per visit. The same choice applies to every
  state event. (The version of MAP's behavior.py we read emitted one 'sample' / 'delay' event
  per visit and used the first visit of presample / go / trialend, i.e. ``'all'``.)
* action events: ('left lick', t) for each Port1In, ('right lick', t) for each Port2In,
  sorted by time (ties: left before right).
* notes ``(trial_note_type, trial_note)``: ('protocol #', str(ProtocolType)); ('bitcode',
  decimal string of GUI.randomID) if present (MAP stored ``str(randomID)``; :func:`bitcode_bits`
  gives the 10-character MSB-first form of the ephys-side ``bitCodeS``); ('autolearn', ...)
  if the GUI has Autolearn.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from .bpod import BpodTrial

__all__ = [
    "TrialEvent", "ActionEvent", "TrialRecord", "interpret_trial", "instruction_of",
    "outcome_of", "early_lick_of", "trial_events", "action_events", "bitcode_bits",
    "is_training", "MIN_PROTOCOL_TYPE", "REWARD_STATES", "EARLY_LICK_STATES", "EVENT_STATES",
    "LICK_EVENTS",
]

MIN_PROTOCOL_TYPE = 3          # ProtocolType < 3: water-valve calibration / licking training
REWARD_STATES = ("GiveLeftDrop", "GiveRightDrop", "Reward")
EARLY_LICK_STATES = ("EarlyLickSample", "EarlyLickDelay")
# MAP trial_event_type -> Bpod state whose entry marks it
EVENT_STATES = {"presample": "PreSamplePeriod", "sample": "SamplePeriod",
                "delay": "DelayPeriod", "go": "ResponseCue", "trialend": "TrialEnd"}
# Bpod event -> MAP action_event_type
LICK_EVENTS = {"Port1In": "left lick", "Port2In": "right lick"}

Visit = Literal["last", "first", "all"]


class TrialEvent(NamedTuple):
    trial_event_type: str
    time: float        # s, relative to trial start
    duration: float    # s


class ActionEvent(NamedTuple):
    action_event_type: str
    time: float        # s, relative to trial start


@dataclass
class TrialRecord:
    """One ingestable trial, in the experiment tables' terms.

    trial:        Bpod 1-based trial number.
    start_time, stop_time: TrialStartTimestamp / TrialEndTimestamp (s, Bpod session clock).
    protocol_type, instruction ('left'|'right'|'none'), outcome ('hit'|'miss'|'ignore'),
    early_lick ('early'|'no early'), auto_water, free_water: BehaviorTrial attributes.
    bitcode:      GUI.randomID (int) or None.
    trial_events: [TrialEvent], sorted by time; action_events: [ActionEvent], sorted by time.
    notes:        [(trial_note_type, trial_note)].
    """

    trial: int
    start_time: float
    stop_time: float
    protocol_type: int
    instruction: str
    outcome: str
    early_lick: str
    auto_water: bool
    free_water: bool
    bitcode: int | None
    trial_events: list[TrialEvent] = field(default_factory=list)
    action_events: list[ActionEvent] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def event(self, trial_event_type: str) -> TrialEvent | None:
        """The first event of that type, or None."""
        return next((e for e in self.trial_events if e.trial_event_type == trial_event_type),
                    None)

    @property
    def go_cue(self) -> float | None:
        e = self.event("go")
        return None if e is None else e.time


def is_training(trial: BpodTrial) -> bool:
    return trial.protocol_type is None or trial.protocol_type < MIN_PROTOCOL_TYPE


def instruction_of(trial: BpodTrial) -> str:
    reversal = trial.gui.get("Reversal", 1)
    try:
        reversal = int(round(float(reversal)))
    except (TypeError, ValueError):
        return "none"
    mapping = {1: {1: "left", 0: "right"}, 2: {1: "right", 0: "left"}}.get(reversal, {})
    return mapping.get(trial.trial_type, "none")


def early_lick_of(trial: BpodTrial) -> str:
    return "early" if any(trial.visited(s) for s in EARLY_LICK_STATES) else "no early"


def outcome_of(trial: BpodTrial) -> str:
    if any(trial.visited(s) for s in REWARD_STATES):
        return "hit"
    if trial.visited("TimeOut") and early_lick_of(trial) == "no early":
        return "miss"
    return "ignore"


def _pick(rows: np.ndarray, visit: Visit) -> np.ndarray:
    if len(rows) == 0 or visit == "all":
        return rows
    return rows[-1:] if visit == "last" else rows[:1]


def trial_events(trial: BpodTrial, visit: Visit = "last") -> list[TrialEvent]:
    """presample, sample, delay, go, choice, reward, trialend (those that happened), by time."""
    if visit not in ("last", "first", "all"):
        raise ValueError(f"visit must be 'last', 'first' or 'all', not {visit!r}")
    out = []
    for etype, state in EVENT_STATES.items():
        for a, b in _pick(trial.visits(state), visit):
            out.append(TrialEvent(etype, float(a), float(b - a)))
    for state in REWARD_STATES:
        rows = trial.visits(state)
        if len(rows):
            out.append(TrialEvent("reward", float(rows[0, 0]), float(rows[0, 1] - rows[0, 0])))
            break
    go = trial.visits(EVENT_STATES["go"])
    if len(go):
        go_on = _pick(go, "first" if visit == "first" else "last")[0, 0]
        licks = np.sort(np.concatenate([trial.event_times(e) for e in LICK_EVENTS]))
        after = licks[licks >= go_on]
        if len(after):
            out.append(TrialEvent("choice", float(after[0]), 0.0))
    order = list(EVENT_STATES) + ["choice", "reward"]
    out.sort(key=lambda e: (e.time, order.index(e.trial_event_type)))
    return out


def action_events(trial: BpodTrial) -> list[ActionEvent]:
    """Licks: ('left lick', t) per Port1In, ('right lick', t) per Port2In, sorted by time."""
    out = [ActionEvent(kind, float(t)) for ev, kind in LICK_EVENTS.items()
           for t in trial.event_times(ev)]
    return sorted(out, key=lambda a: (a.time, a.action_event_type))


def bitcode_bits(code: int, n_bits: int = 10) -> str:
    """523 -> '1000001011': the code as n_bits characters, most significant bit first."""
    if not 0 <= code < (1 << n_bits):
        raise ValueError(f"bitcode {code} does not fit in {n_bits} bits")
    return format(code, f"0{n_bits}b")


def interpret_trial(trial: BpodTrial, visit: Visit = "last") -> TrialRecord | None:
    """The experiment-table view of one Bpod trial; None for training trials (skipped)."""
    if is_training(trial):
        return None
    notes = [("protocol #", str(trial.protocol_type))]
    if "Autolearn" in trial.gui:
        notes.append(("autolearn", str(trial.gui["Autolearn"])))
    if trial.bitcode is not None:
        notes.append(("bitcode", str(trial.bitcode)))
    return TrialRecord(
        trial=trial.number, start_time=trial.start, stop_time=trial.end,
        protocol_type=int(trial.protocol_type), instruction=instruction_of(trial),
        outcome=outcome_of(trial), early_lick=early_lick_of(trial),
        auto_water=trial.auto_water, free_water=False, bitcode=trial.bitcode,
        trial_events=trial_events(trial, visit), action_events=action_events(trial),
        notes=notes)

"""Bpod SessionData writer (MATLAB v5) for the delay-response task.

Layout follows what Bpod saves on MAP's rigs (RIG_SHARE.md): TrialSettings{n}.GUI,
RawEvents.Trial{n}.States/Events, RawData.Original*; unvisited states are [NaN NaN];
Events only lists events that happened (as Bpod does)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .matfile import save_v5
from .model import PROTOCOL, STATE_NAMES, Session, stim_code

EVENT_CODES = {"Port1In": 69, "Port1Out": 70, "Port2In": 71, "Port2Out": 72, "Tup": 255}


def _cell(items: list) -> np.ndarray:
    c = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):
        c[i] = v
    return c


def _trial_struct(tr) -> tuple[dict, dict]:
    states = {}
    for name in STATE_NAMES:
        rows = tr.states[name]
        states[name] = np.array(rows, float) if rows else np.array([[np.nan, np.nan]])
    events: dict = {}
    for port, licks in (("Port1", tr.licks_left), ("Port2", tr.licks_right)):
        if licks:
            events[f"{port}In"] = np.array([licks], float)
            events[f"{port}Out"] = np.array([[round(x + 0.03, 4) for x in licks]], float)
    visits = sorted((rows[k][0], STATE_NAMES.index(name) + 1, rows[k][1])
                    for name, rows in tr.states.items() for k in range(len(rows)))
    events["Tup"] = np.array([[v[2] for v in visits]], float)
    ev_list = sorted([(t, c) for name, c in EVENT_CODES.items() if name in events
                      for t in np.atleast_1d(events[name].ravel())])
    raw = dict(
        names=_cell(list(STATE_NAMES)),
        state_data=np.array([[v[1] for v in visits]], float),
        state_ts=np.array([[v[0] for v in visits] + [tr.duration]], float),
        event_data=np.array([[c for _, c in ev_list]], float),
        event_ts=np.array([[t for t, _ in ev_list]], float),
    )
    return {"States": states, "Events": events}, raw


def session_data(s: Session) -> dict:
    """The SessionData struct as nested dicts / object arrays for scipy.io.savemat."""
    trials, raws, settings = [], [], []
    for tr in s.trials:
        st, raw = _trial_struct(tr)
        trials.append(st)
        raws.append(raw)
        settings.append({"GUI": {
            "ProtocolType": float(tr.protocol_type), "Autowater": float(tr.auto_water),
            "randomID": float(tr.bitcode), "Reversal": 1.0, "SamplePeriod": 1.3,
            "DelayPeriod": 1.2, "AnswerPeriod": 1.5, "ResponseTime": 1.0,
            "Subject": s.h2o}})
    return {
        "nTrials": float(len(s.trials)),
        "TrialStartTimestamp": np.array([t.start for t in s.trials], float),
        "TrialEndTimestamp": np.array([t.end for t in s.trials], float),
        "TrialTypes": np.array([t.trial_type_code for t in s.trials], float),
        "StimTrials": np.array([stim_code(t) for t in s.trials], float),
        "TrialSettings": _cell(settings),
        "Info": {"BpodSoftwareVersion": "0.7", "StateMachineVersion": "Bpod 0.7",
                 "SessionDate": s.start.strftime("%d-%b-%Y"),
                 "SessionStartTime_UTC": s.start.strftime("%H:%M:%S"),
                 "SessionProtocol": PROTOCOL, "Subject": s.h2o},
        "RawEvents": {"Trial": _cell(trials)},
        "RawData": {
            "OriginalStateNamesByNumber": _cell([r["names"] for r in raws]),
            "OriginalStateData": _cell([r["state_data"] for r in raws]),
            "OriginalEventData": _cell([r["event_data"] for r in raws]),
            "OriginalStateTimestamps": _cell([r["state_ts"] for r in raws]),
            "OriginalEventTimestamps": _cell([r["event_ts"] for r in raws]),
        },
    }


def write_behavior(root: Path, s: Session) -> Path:
    """Write the session's Bpod .mat where the rig would; the header date is the session's."""
    path = root / s.behavior_relpath
    last = s.start
    save_v5(path, {"SessionData": session_data(s)}, last)
    return path

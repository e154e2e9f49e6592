"""``psth``: trial conditions, per-unit PSTHs and ipsi/contra selectivity, as MAP's ``pipeline/psth.py``.

The numbers come from :mod:`pipeline.analysis`; the tables fetch, call and insert.

Differences from MAP, on purpose:

* PSTHs and period rates count a unit's session-wide spike train around each go cue
  (``Unit.spike_times`` + ``ephys.TrialEvent`` go cues), so a -3 s bin holds the spikes that
  happened 3 s before the go cue even when that was in the previous trial; MAP cut each trial's
  spikes at the trial's boundaries.
* Bins are 40 ms over -3 .. 3 s with both ends included (150 bins); the PSTH is stored as a rate
  (Hz) and the trial count beside it, not as MAP's ``[rates, edges]`` pair.
* ipsi/contra: the recorded hemisphere is the sign of the insertion's ML coordinate
  (``ProbeInsertion.InsertionLocation``); without a location (the ephys ingest does not fill it
  yet) the left hemisphere is assumed (:data:`DEFAULT_HEMISPHERE`). Ipsi trials are those whose
  instruction is the recorded side.
"""

from __future__ import annotations

import hashlib
import json

import datajoint as dj
import numpy as np

from . import analysis, ephys, experiment
from .db import schema as _schema

schema = _schema("psth")

DEFAULT_HEMISPHERE = "left"
SELECTIVITY_CONDITION = "good_noearlylick_hit"

# name -> restriction of experiment.BehaviorTrial, plus 'photostim': True (only photostim trials) or
# False (none); 'good_' conditions exclude photostim trials, as MAP's _get_trials_exclude_stim.
CONDITIONS = {
    "good_noearlylick_hit": {"outcome": "hit", "early_lick": "no early", "photostim": False},
    "good_noearlylick_left_hit": {"outcome": "hit", "early_lick": "no early", "trial_instruction": "left", "photostim": False},
    "good_noearlylick_right_hit": {"outcome": "hit", "early_lick": "no early", "trial_instruction": "right", "photostim": False},
    "good_noearlylick_miss": {"outcome": "miss", "early_lick": "no early", "photostim": False},
    "good_noearlylick_left_miss": {"outcome": "miss", "early_lick": "no early", "trial_instruction": "left", "photostim": False},
    "good_noearlylick_right_miss": {"outcome": "miss", "early_lick": "no early", "trial_instruction": "right", "photostim": False},
    "all_noearlylick_nostim": {"early_lick": "no early", "photostim": False},
    "all_noearlylick_stim": {"early_lick": "no early", "photostim": True},
}


def condition_hash(func: str, arg: dict) -> str:
    return hashlib.md5(json.dumps({"func": func, "arg": arg}, sort_keys=True).encode()).hexdigest()


@schema
class TrialCondition(dj.Lookup):
    definition = """
    # a named set of behaviour trials (MAP)
    trial_condition_name : varchar(128)
    ---
    trial_condition_hash : varchar(32)   # md5 of func and arg
    unique index (trial_condition_hash)
    trial_condition_func : varchar(36)   # how the arg selects trials
    trial_condition_arg : json           # BehaviorTrial attributes, and photostim: true | false
    """
    contents = [(name, condition_hash("behavior_trials", arg), "behavior_trials", arg) for name, arg in CONDITIONS.items()]

    @staticmethod
    def get_trials(trial_condition_name: str, restriction=None):
        """experiment.BehaviorTrial restricted to the condition (and ``restriction``)."""
        arg = (TrialCondition & {"trial_condition_name": trial_condition_name}).fetch1("trial_condition_arg")
        return behavior_trials(arg, restriction)


def behavior_trials(arg: dict, restriction=None):
    arg = dict(arg)
    photostim = arg.pop("photostim", None)
    trials = experiment.BehaviorTrial & arg
    if photostim is True:
        trials = trials & experiment.PhotostimTrial
    elif photostim is False:
        trials = trials - experiment.PhotostimTrial
    if restriction is not None:
        trials = trials & restriction
    return trials


def condition_go_cues(trial_condition_name: str, session_key: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(trials, instructions, go cues on the recording clock) of the session's ephys trials in the condition."""
    session = {k: session_key[k] for k in ("subject_id", "session")}
    trials = TrialCondition.get_trials(trial_condition_name, session).proj("trial_instruction")
    go = (ephys.TrialEvent & session & "trial_event_type = 'go'").proj("trial_event_time")
    rows = (trials * go)
    if not rows:
        return np.zeros(0, int), np.zeros(0, object), np.zeros(0)
    numbers, instructions, times = rows.to_arrays("trial", "trial_instruction", "trial_event_time", order_by="trial")
    return np.asarray(numbers, int), np.asarray(instructions, object), np.asarray(times, float)


def probe_hemisphere(key: dict) -> str:
    """'left' or 'right': the recorded hemisphere of the key's insertion (see the module notes)."""
    insertion = {k: key[k] for k in ("subject_id", "session", "insertion_number")}
    location = (ephys.ProbeInsertion.InsertionLocation & insertion).to_dicts()
    side = analysis.hemisphere_from_ml(location[0]["ml_location"]) if location else None
    return side or DEFAULT_HEMISPHERE


@schema
class UnitPsth(dj.Computed):
    definition = """
    # mean firing rate of a unit around the go cue over the trials of a condition (MAP)
    -> TrialCondition
    -> ephys.Unit
    ---
    unit_psth = null : <blob>            # (Hz) per 40 ms bin, -3 .. 3 s around the go cue; null without trials
    psth_n_trials : int32                # trials averaged
    """

    psth_params = {"xmin": analysis.PSTH_WINDOW[0], "xmax": analysis.PSTH_WINDOW[1], "binsize": analysis.PSTH_BIN_S}

    @staticmethod
    def edges() -> np.ndarray:
        return analysis.psth_edges()

    def make(self, key):
        _, _, go = condition_go_cues(key["trial_condition_name"], key)
        spikes = (ephys.Unit & key).fetch1("spike_times")
        psth = analysis.unit_psth(spikes, go)
        self.insert1({**key, "unit_psth": psth, "psth_n_trials": len(go)})


@schema
class Selectivity(dj.Lookup):
    definition = """
    selectivity : varchar(24)
    """
    contents = [(s,) for s in analysis.SELECTIVITIES]


@schema
class PeriodSelectivity(dj.Computed):
    definition = """
    # ipsi vs contra firing of a unit in one period, hit trials without early lick or photostim (MAP)
    -> ephys.Unit
    -> experiment.Period
    ---
    -> Selectivity.proj(period_selectivity='selectivity')
    contra_firing_rate = null : float64  # (Hz) mean over contra trials
    ipsi_firing_rate = null : float64    # (Hz) mean over ipsi trials
    p_value = null : float64             # two-sided Mann-Whitney U, ipsi vs contra per-trial rates
    hemisphere : varchar(8)              # the recorded side taken as ipsi: left | right
    """

    alpha = analysis.SELECTIVITY_ALPHA

    def make(self, key):
        _, instructions, go = condition_go_cues(SELECTIVITY_CONDITION, key)
        start, end = (experiment.Period & key).fetch1("period_start", "period_end")
        spikes = (ephys.Unit & key).fetch1("spike_times")
        rates = analysis.period_rates(spikes, go, float(start), float(end))
        side = probe_hemisphere(key)
        result = analysis.period_selectivity(rates[instructions == side], rates[instructions != side], self.alpha)
        self.insert1({**key, "period_selectivity": result.selectivity, "p_value": result.p_value, "hemisphere": side,
                      "contra_firing_rate": _finite(result.contra_rate), "ipsi_firing_rate": _finite(result.ipsi_rate)})


def _finite(value):
    return None if value is None or not np.isfinite(value) else float(value)


@schema
class UnitSelectivity(dj.Computed):
    definition = """
    # a unit's selectivity: that of its most significant selective period (MAP)
    -> ephys.Unit
    ---
    -> Selectivity.proj(unit_selectivity='selectivity')
    """

    @property
    def key_source(self):
        n_periods = len(experiment.Period())
        done = ephys.Unit.aggr(PeriodSelectivity, n="count(*)") & f"n = {n_periods}"
        return ephys.Unit.proj() & done.proj()

    def make(self, key):
        labels, p_values = (PeriodSelectivity & key).to_arrays("period_selectivity", "p_value")
        periods = [(str(s), None if p is None or not np.isfinite(p) else float(p)) for s, p in zip(labels, p_values)]
        self.insert1({**key, "unit_selectivity": analysis.unit_selectivity(periods)})

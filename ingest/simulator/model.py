"""Ground-truth plan of a simulated lab: subjects, sessions, trials, probes and units.

Every writer module renders part of this plan to files; the manifest is rendered from it too,
so the files and the ground truth cannot disagree. Building the plan is cheap (no spikes);
spike trains are generated per unit on demand by :func:`unit_spike_samples` so memory stays
bounded at bench scale.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 30000
REFRACTORY_S = 0.0015
REFRACTORY_SAMPLES = int(round(REFRACTORY_S * SAMPLE_RATE))  # 45 samples
PROTOCOL = "delay_task"
RIG = "RRig"
CAMERAS = ("side", "bottom")
BODY_PARTS = ("nose", "tongue", "jaw", "left_paw", "right_paw", "lickport")

# All states of the delay-task state machine, in state-number order (1-based in Bpod).
STATE_NAMES = (
    "PreSamplePeriod", "SamplePeriod", "EarlyLickSample", "DelayPeriod", "EarlyLickDelay",
    "ResponseCue", "AnswerPeriod", "GiveLeftDrop", "GiveRightDrop", "TimeOut", "NoResponse",
    "StopLicking", "TrialEnd",
)
REWARD_STATES = ("GiveLeftDrop", "GiveRightDrop")
EARLY_STATES = ("EarlyLickSample", "EarlyLickDelay")

# probe type code -> (part number, shanks, uV per bit, imAiRangeMax, imMaxInt)
PROBE_TYPES = {
    0: ("PRB_1_4_0480_1", 1, 2.34375, 0.6, 512),
    21: ("PRB2_1_2_0640_0", 1, 0.763, 0.5, 8192),
    24: ("PRB2_4_2_0640_0", 4, 0.763, 0.5, 8192),
}


@dataclass(frozen=True)
class Scale:
    """Size knobs of one simulation scale."""

    name: str
    n_trials: tuple[int, int]
    n_units: tuple[int, int]
    n_saved: int              # saved AP channels per probe (plus 1 sync channel)
    epochs: dict              # epoch durations (s)
    n_training: int           # leading trials with ProtocolType < 3
    fps: int                  # tracking frame rate
    video_frames: int         # frames per raw trial video
    rate_mean: float          # mean firing rate (Hz)
    max_waveform_spikes: int  # cap on spikes whose waveform is added into the .ap.bin
    side_data: bool           # write tracking/video/histology
    bench_files: int = 0      # small discovery-benchmark files under bench_files/


SCALES: dict[str, Scale] = {
    "tiny": Scale("tiny", (5, 8), (4, 8), 16,
                  dict(pre=0.2, sample=0.3, delay=0.4, response=0.5, post=0.2, iti=0.2),
                  1, 100, 4, 8.0, 50_000, True),
    "small": Scale("small", (40, 80), (20, 40), 16,
                   dict(pre=0.2, sample=0.4, delay=0.5, response=0.6, post=0.25, iti=0.25),
                   3, 100, 6, 8.0, 50_000, True),
    "bench": Scale("bench", (500, 500), (400, 400), 32,
                   dict(pre=0.3, sample=0.5, delay=0.6, response=0.7, post=0.3, iti=0.3),
                   5, 100, 4, 56.0, 50_000, False, bench_files=74_000),
}

DEFAULT_SIZE = {"tiny": (2, 2), "small": (3, 3), "bench": (1, 1)}


@dataclass
class Trial:
    number: int                     # Bpod 1-based trial index
    protocol_type: int
    instruction: str                # 'left' | 'right'
    trial_type_code: int            # SessionData.TrialTypes: 1 = left, 0 = right
    auto_water: bool
    bitcode: int                    # 10-bit GUI.randomID
    start: float                    # TrialStartTimestamp, Bpod clock (s)
    duration: float
    states: dict                    # name -> list[[start, stop]] (relative to trial start)
    licks_left: list                # Port1In times relative to trial start
    licks_right: list               # Port2In
    go_cue: float                   # ResponseCue onset, relative to trial start
    outcome: str = ""
    early_lick: bool = False

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Unit:
    cluster_id: int
    peak_channel: int               # index into the saved channels (Kilosort channel index)
    base_rate: float
    mod_rate: float
    preference: str                 # 'left' | 'right'
    latency: float                  # s relative to the go cue
    width: float                    # s (gaussian sd of the go-cue modulation)
    amplitude_uv: float
    ks_label: str                   # good | mua
    group: str                      # curated group (== ks_label if uncurated)
    isi_violations: bool            # deliberately violates the refractory period
    spike_count: int = 0

    @property
    def quality(self) -> str:
        return self.group


@dataclass
class Probe:
    imec: int
    type_code: int
    serial: int
    saved_channels: list            # acquired AP channel indices saved to disk
    sorter: str                     # 'kilosort2' | 'jrclust_v4'
    curated: bool
    units: list = field(default_factory=list)
    insertion: dict = field(default_factory=dict)  # ml/ap (um from bregma), depth (um)

    @property
    def part_number(self) -> str:
        return PROBE_TYPES[self.type_code][0]

    @property
    def n_shanks(self) -> int:
        return PROBE_TYPES[self.type_code][1]

    @property
    def uv_per_bit(self) -> float:
        return PROBE_TYPES[self.type_code][2]

    @property
    def n_saved(self) -> int:
        return len(self.saved_channels) + 1


@dataclass
class Ephys:
    run: str                        # <h2o>_<YYYYMMDD>[_<k>]
    offset: float                   # ephys_time = bpod_time + offset (s)
    n_samples: int
    probes: list
    bitcode_mat: bool

    @property
    def duration(self) -> float:
        return self.n_samples / SAMPLE_RATE


@dataclass
class Session:
    h2o: str
    subject_id: int | None          # None for the unregistered water-restriction number
    start: dt.datetime              # Bpod session start (wall clock, local time)
    day_index: int                  # 0 for the first session of that day, k for later ones
    session_number: int | None      # expected MAP session number (None if unregistered)
    trials: list
    ephys: Ephys | None = None
    tracked: dict = field(default_factory=dict)  # campos -> list of (file index, trial number)

    @property
    def date_str(self) -> str:
        return self.start.strftime("%Y%m%d")

    @property
    def suffix(self) -> str:
        return "" if self.day_index == 0 else f"_{self.day_index}"

    @property
    def behavior_relpath(self) -> str:
        name = f"{self.h2o}_{PROTOCOL}_{self.start:%Y%m%d_%H%M%S}.mat"
        return f"behavior/{self.h2o}/{PROTOCOL}/Session Data/{name}"


@dataclass
class Subject:
    subject_id: int
    h2o: str
    sex: str
    date_of_birth: dt.date
    cage_number: int
    wr_start_date: dt.date
    wr_start_weight: float
    username: str = "daveliu"


@dataclass
class SharePlan:
    scale: Scale
    seed: int
    subjects: list
    sessions: list                  # registered and unregistered, chronological per h2o
    unregistered_h2o: str | None


# ----------------------------------------------------------------------------- outcomes
def outcome_from_states(states: dict) -> tuple[str, bool]:
    """RIG_SHARE outcome rule: hit if a reward state was visited; miss if TimeOut was
    visited without an early lick; ignore otherwise. Early lick = an EarlyLick* state."""
    def visited(name: str) -> bool:
        return bool(states.get(name))
    early = any(visited(s) for s in EARLY_STATES)
    if any(visited(s) for s in REWARD_STATES):
        return "hit", early
    if visited("TimeOut") and not early:
        return "miss", early
    return "ignore", early


# ----------------------------------------------------------------------------- trials
def _lick_train(rng: np.random.Generator, t0: float, t1: float) -> list:
    """Licks at ~7 Hz from t0 until t1."""
    out, t = [], t0
    while t < t1:
        out.append(round(t, 4))
        t += 0.13 + 0.03 * rng.random()
    return out


def stim_code(trial) -> int:
    """MAP's per-trial photostim code (SessionData.StimTrials): 0 = no light, 4/5/6 = left/right/both
    ALM. Derived from the bitcode, so it needs no draw from the random stream."""
    if trial.protocol_type < 3 or trial.bitcode % 4:
        return 0
    return (4, 5, 6)[trial.bitcode % 3]


def make_trials(rng: np.random.Generator, scale: Scale, n: int, first_start: float) -> list:
    """The trial sequence of one delay-task session, with every outcome kind represented."""
    ep = scale.epochs
    n_train = min(scale.n_training, max(n - 4, 0))
    kinds_forced = ["hit", "early", "miss", "ignore", "auto"]
    n_reg = n - n_train
    kinds = kinds_forced[:n_reg] + list(rng.choice(
        ["hit", "hit", "hit", "miss", "ignore", "early", "auto"], size=max(n_reg - 5, 0)))
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    kinds = ["hit"] * n_train + kinds
    bitcodes = rng.choice(1024, size=n, replace=False)
    trials, t_start = [], first_start
    for i in range(n):
        kind = kinds[i]
        training = i < n_train
        instr = "left" if rng.random() < 0.5 else "right"
        states: dict = {s: [] for s in STATE_NAMES}
        licks = {"left": [], "right": []}
        jit = lambda: float(rng.uniform(0.0, 0.05))  # noqa: E731
        t = 0.0
        states["PreSamplePeriod"].append([t, t + ep["pre"] + jit()])
        t = states["PreSamplePeriod"][-1][1]
        epochs = [("SamplePeriod", "EarlyLickSample", ep["sample"])]
        if not training:
            epochs.append(("DelayPeriod", "EarlyLickDelay", ep["delay"]))
        early_epoch = rng.integers(len(epochs)) if kind == "early" else -1
        for k, (name, early_name, dur) in enumerate(epochs):
            if k == early_epoch:
                te = t + dur * float(rng.uniform(0.3, 0.7))
                states[name].append([t, te])
                side = "left" if rng.random() < 0.5 else "right"
                licks[side].append(round(te, 4))
                states[early_name].append([te, te + 0.05])
                t = te + 0.05
            states[name].append([t, t + dur])
            t += dur
        go = t
        states["ResponseCue"].append([go, go + 0.1])
        t = go + 0.1
        auto = kind == "auto"
        response = {"hit": "correct", "auto": "correct", "miss": "wrong", "ignore": "none",
                    "early": rng.choice(["correct", "correct", "wrong"])}[kind]
        correct_port, wrong_port = instr, ("right" if instr == "left" else "left")
        drop = "GiveLeftDrop" if instr == "left" else "GiveRightDrop"
        if auto:
            states[drop].append([t, t + 0.05])
            t += 0.05
            lick0 = t + float(rng.uniform(0.1, 0.25))
            licks[correct_port] += _lick_train(rng, lick0, t + ep["post"])
            states["StopLicking"].append([t, t + ep["post"]])
            t += ep["post"]
        elif response == "none":
            states["AnswerPeriod"].append([t, t + ep["response"]])
            t += ep["response"]
            states["NoResponse"].append([t, t + 0.01])
            t += 0.01
        else:
            rt = float(rng.uniform(0.05, ep["response"] * 0.6))
            states["AnswerPeriod"].append([t, t + rt])
            t += rt
            port = correct_port if response == "correct" else wrong_port
            licks[port].append(round(t, 4))
            if response == "correct":
                states[drop].append([t, t + 0.05])
                t += 0.05
                licks[port] += _lick_train(rng, t + 0.1, t + ep["post"])
                states["StopLicking"].append([t, t + ep["post"]])
                t += ep["post"]
            else:
                states["TimeOut"].append([t, t + ep["post"]])
                t += ep["post"]
        states["TrialEnd"].append([t, t + 0.001])
        duration = t + 0.001
        states = {k: [[round(a, 4), round(b, 4)] for a, b in v] for k, v in states.items()}
        tr = Trial(number=i + 1, protocol_type=2 if training else 5, instruction=instr,
                   trial_type_code=1 if instr == "left" else 0, auto_water=auto,
                   bitcode=int(bitcodes[i]), start=round(t_start, 4), duration=round(duration, 4),
                   states=states, licks_left=sorted(licks["left"]),
                   licks_right=sorted(licks["right"]), go_cue=round(go, 4))
        tr.outcome, tr.early_lick = outcome_from_states(states)
        trials.append(tr)
        t_start = tr.end + ep["iti"] + float(rng.uniform(0.0, 0.1))
    return trials


# ----------------------------------------------------------------------------- probes
def _saved_channels(type_code: int, n_saved: int) -> list:
    """Acquired channels saved to disk: spread along the shank(s) so the histology sees
    several brain regions and every shank of a 4-shank probe is represented."""
    if PROBE_TYPES[type_code][1] == 4:
        per = n_saved // 4
        return [s * 96 + int(c) for s in range(4) for c in np.linspace(0, 95, per).round()]
    return [int(c) for c in np.linspace(0, 383, n_saved).round()]


def make_units(rng: np.random.Generator, n_units: int, n_channels: int, rate_mean: float,
               curated: bool, uv_per_bit: float) -> list:
    units = []
    for cid in range(n_units):
        ks_label = "good" if rng.random() < 0.6 else "mua"
        group = ks_label
        if curated and cid % 3 == 1:
            group = {"good": "mua", "mua": "noise"}[ks_label]
        units.append(Unit(
            cluster_id=cid, peak_channel=int(rng.integers(n_channels)),
            base_rate=float(rng.lognormal(np.log(rate_mean * 0.6), 0.5)),
            mod_rate=float(rng.uniform(0.2, 1.0) * rate_mean * 1.5),
            preference="left" if rng.random() < 0.5 else "right",
            latency=float(rng.uniform(-0.3, 0.3)), width=float(rng.uniform(0.08, 0.25)),
            amplitude_uv=float(rng.uniform(60, 300)), ks_label=ks_label, group=group,
            isi_violations=False))
    # a few poor units violate the refractory period on purpose (never a 'good' one)
    poor = [u for u in units if u.group != "good"]
    for u in poor[: max(1, len(poor) // 3)]:
        u.isi_violations = True
    return units


def unit_spike_samples(unit: Unit, go_times: np.ndarray, go_pref: np.ndarray, n_samples: int,
                       seed: int) -> np.ndarray:
    """Spike sample indices (int64, sorted) of one unit: inhomogeneous Poisson process with a
    baseline rate plus a gaussian bump around each go cue (weaker on non-preferred trials),
    thinned to respect the 1.5 ms refractory period unless the unit is a deliberate violator.

    go_times: go-cue times in the ephys clock (s); go_pref: 1.0 where the trial instruction
    matches the unit's preference, 0.3 otherwise."""
    rng = np.random.default_rng(seed)
    duration = n_samples / SAMPLE_RATE
    rmax = unit.base_rate + unit.mod_rate
    n = rng.poisson(rmax * duration)
    t = np.sort(rng.uniform(0.0, duration, n))
    if len(go_times):
        centres = go_times + unit.latency
        j = np.clip(np.searchsorted(centres, t), 1, len(centres)) - 1
        j2 = np.clip(j + 1, 0, len(centres) - 1)
        d1, d2 = t - centres[j], t - centres[j2]
        use2 = np.abs(d2) < np.abs(d1)
        d = np.where(use2, d2, d1)
        w = np.where(use2, go_pref[j2], go_pref[j])
        rate = unit.base_rate + unit.mod_rate * w * np.exp(-0.5 * (d / unit.width) ** 2)
    else:
        rate = np.full(t.shape, unit.base_rate)
    t = t[rng.random(n) * rmax < rate]
    s = np.unique(np.floor(t * SAMPLE_RATE).astype(np.int64))
    s = s[(s >= 0) & (s < n_samples - 82)]
    if len(s) > 1:
        keep = np.ones(len(s), bool)
        keep[1:] = np.diff(s) >= REFRACTORY_SAMPLES   # one pass suffices (see docstring)
        s = s[keep]
    if unit.isi_violations and len(s) > 10:
        k = max(2, len(s) // 100)
        extra = s[rng.choice(len(s) - 1, k, replace=False)] + rng.integers(10, 30, k)
        s = np.unique(np.concatenate([s, extra[extra < n_samples - 82]]))
    return s


# ----------------------------------------------------------------------------- plan
H2O_PREFIXES = ("dl", "tw", "sc", "kh", "jy", "hh")


def build_plan(subjects: int, sessions: int, scale: str | Scale, seed: int, *,
               h2o_names: list | None = None, same_day: bool = True,
               all_ephys_kilosort: bool = False, unregistered: bool = True) -> SharePlan:
    """Draw the whole ground truth for a share. Deterministic for a given seed.

    The keyword arguments exist for the broken catalogue (one plain Kilosort session per
    broken case); simulate_share uses the defaults."""
    sc = SCALES[scale] if isinstance(scale, str) else scale
    rng = np.random.default_rng([seed, 7919])
    subs = []
    for i in range(subjects):
        sid = 400000 + int(rng.integers(1000, 9999)) * 10 + i
        dob = dt.date(2018, 1, 1) + dt.timedelta(days=int(rng.integers(0, 60)))
        h2o = h2o_names[i] if h2o_names else f"{H2O_PREFIXES[i % len(H2O_PREFIXES)]}{30 + i}"
        subs.append(Subject(
            subject_id=sid, h2o=h2o, sex=("M", "F", "Unknown")[i % 3], date_of_birth=dob,
            cage_number=150000 + int(rng.integers(0, 9999)),
            wr_start_date=dob + dt.timedelta(days=60),
            wr_start_weight=round(float(rng.uniform(19, 27)), 1)))
    plan_sessions: list = []
    for si, sub in enumerate(subs):
        day = dt.datetime(2018, 4, 2) + dt.timedelta(days=int(si * 2 + rng.integers(0, 2)))
        prev_start = None
        for k in range(sessions):
            if k == 1 and si == 0 and same_day:
                # irregularity: subject 0's second session is on the same day as its first
                day_index = 1
                start = prev_start + dt.timedelta(hours=4, minutes=int(rng.integers(0, 50)))
            else:
                day_index = 0
                if k > 0:
                    day = day + dt.timedelta(days=1 + int(rng.integers(0, 2)))
                start = day.replace(hour=9 + int(rng.integers(0, 2)), minute=int(rng.integers(0, 60)))
            start = start.replace(second=int(rng.integers(0, 60)))
            prev_start = start
            n = int(rng.integers(sc.n_trials[0], sc.n_trials[1] + 1))
            first = round(float(rng.uniform(0.1, 55.0)), 4)
            plan_sessions.append(Session(h2o=sub.h2o, subject_id=sub.subject_id, start=start,
                                         day_index=day_index, session_number=k + 1,
                                         trials=make_trials(rng, sc, n, first)))
    # which sessions get ephys: all but every 4th (a behaviour-only session is realistic)
    bench = sc.name == "bench"
    ephys_sessions = [s for g, s in enumerate(plan_sessions)
                      if bench or all_ephys_kilosort or g % 4 != 3]
    n_eph = len(ephys_sessions)
    jrc_index = -1
    if not (bench or all_ephys_kilosort) and n_eph > 1:
        jrc_index = next((i for i, s in enumerate(ephys_sessions) if s.day_index > 0), 1)
    for i, s in enumerate(ephys_sessions):
        simple = bench or all_ephys_kilosort
        n_probes = 1 if simple else (2 if (i == 0 or i % 5 == 3) else 1)
        lead = float(rng.uniform(0.5, 2.0))
        offset = round(lead - s.trials[0].start, 4)
        if i == 2 and not simple:
            # irregularity: the recording started before the Bpod clock (positive offset);
            # this session's Bpod clock starts its first trial early so the file stays short
            delta = s.trials[0].start - 0.3
            for t in s.trials:
                t.start = round(t.start - delta, 4)
            offset = round(lead, 4)
        n_samples = int(np.ceil((s.trials[-1].end + offset + 1.0) * SAMPLE_RATE))
        probes = []
        for p in range(n_probes):
            type_code = 0 if (simple or i == jrc_index) else (0, 24, 21)[(i + p) % 3]
            sorter = "jrclust_v4" if (i == jrc_index and p == 0) else "kilosort2"
            curated = sorter == "jrclust_v4" or (not simple and (i + p) % 2 == 0)
            saved = _saved_channels(type_code, sc.n_saved)
            nu = int(rng.integers(sc.n_units[0], sc.n_units[1] + 1))
            probes.append(Probe(
                imec=p, type_code=type_code, serial=18005110000 + int(rng.integers(0, 99999)),
                saved_channels=saved, sorter=sorter, curated=curated,
                units=make_units(rng, nu, len(saved), sc.rate_mean, curated,
                                 PROBE_TYPES[type_code][2]),
                insertion=dict(ml=round(-1500.0 + 3000 * p + float(rng.uniform(-200, 200)), 1),
                               ap=round(2500.0 + float(rng.uniform(-300, 300)), 1),
                               depth=1500.0 if PROBE_TYPES[type_code][1] == 4 else 4000.0)))
        s.ephys = Ephys(run=f"{s.h2o}_{s.date_str}{s.suffix}", offset=offset,
                        n_samples=n_samples, probes=probes, bitcode_mat=(i % 2 == 0))
    # tracking / video: every session, some trials not filmed
    if sc.side_data:
        for s in plan_sessions:
            for cam in CAMERAS:
                filmed = [t.number for t in s.trials if rng.random() > 0.15]
                if len(filmed) == len(s.trials):
                    filmed = filmed[:-1]  # the camera stopped before the last trial
                s.tracked[cam] = [(k, num) for k, num in enumerate(filmed)]
    # an unregistered water-restriction number with one behaviour session
    unreg = None
    if unregistered and subjects >= 2 and sessions >= 2 and not bench:
        unreg = "xx99"
        start = dt.datetime(2018, 4, 3, 15, 12, int(rng.integers(0, 60)))
        n = int(rng.integers(sc.n_trials[0], sc.n_trials[1] + 1))
        plan_sessions.append(Session(
            h2o=unreg, subject_id=None, start=start, day_index=0, session_number=None,
            trials=make_trials(rng, sc, n, round(float(rng.uniform(0.1, 30)), 4))))
    return SharePlan(scale=sc, seed=seed, subjects=subs, sessions=plan_sessions,
                     unregistered_h2o=unreg)


def go_cues_ephys(s: Session) -> tuple[np.ndarray, list]:
    """Go-cue times in the ephys clock and trial instructions, for the spike model."""
    go = np.array([t.start + t.go_cue + s.ephys.offset for t in s.trials])
    return go, [t.instruction for t in s.trials]

"""The computations behind the analysis tables: plain numpy/scipy on arrays, no database.

Each computed table's ``make()`` (``ephys.UnitStat``, ``ephys.UnitCellType``,
``ephys.MAPClusterMetric``, ``ephys.UnitPassingCriteria``, ``psth.UnitPsth``,
``psth.PeriodSelectivity``, ``psth.UnitSelectivity``, ``tracking.TrackingQC``) fetches its inputs,
calls one of these functions and inserts the result. The tests call them on hand-made arrays and
compare the tables with a direct numpy computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ISI_VIOLATION_THRESHOLD_S = 0.002   # MAP: ISIs below 2 ms violate the refractory period
MIN_ISI_S = 0.0                     # MAP: ISIs at or below this are duplicate spikes
FS_MAX_WIDTH_MS = 0.4               # MAP: trough-to-peak below 0.4 ms is fast spiking
WAVEFORM_UPSAMPLE = 100             # MAP: cubic-spline upsampling of the mean waveform
DRIFT_WINDOW = 6                    # MAP drift metric: moving average over 6 trials ...
DRIFT_DOWNSAMPLE = 6                # ... kept every 6th trial
PSTH_WINDOW = (-3.0, 3.0)           # (s) around the go cue
PSTH_BIN_S = 0.04
SELECTIVITY_ALPHA = 0.05
SELECTIVITIES = ("contra-selective", "ipsi-selective", "non-selective")
JUMP_THRESHOLD_PX = 20.0            # TrackingQC: a frame-to-frame move above this is a jump
JUMP_MIN_LIKELIHOOD = 0.9           # ... counted only between frames DeepLabCut is sure of


class AnalysisInputError(ValueError):
    """The stored data cannot be analysed (e.g. spike times not sorted or not finite)."""


def check_spike_times(spikes) -> np.ndarray:
    """A unit's spike times as a 1-D float64 array; raises if they are not finite and sorted."""
    spikes = np.asarray(spikes, dtype=float)
    if spikes.ndim != 1:
        spikes = spikes.ravel()
    if not np.all(np.isfinite(spikes)):
        raise AnalysisInputError(f"spike times hold {int((~np.isfinite(spikes)).sum())} non-finite value(s)")
    if len(spikes) > 1 and np.any(np.diff(spikes) < 0):
        raise AnalysisInputError("spike times are not sorted")
    return spikes


# --- ephys.UnitStat -----------------------------------------------------------------------------

def unit_stat(spikes, trial_spike_counts, trial_durations, *, thresh: float = ISI_VIOLATION_THRESHOLD_S,
              min_isi: float = MIN_ISI_S) -> tuple[float | None, float | None]:
    """(isi_violation, avg_firing_rate) as MAP's UnitStat.

    avg_firing_rate: spikes in the unit's trials / the trials' total duration (Hz).
    isi_violation: (ISIs < ``thresh`` / (2 * n_spikes * (thresh - min_isi))) / avg_firing_rate,
    with the ISIs of the session-wide spike train (duplicates, ISI <= min_isi, removed first).
    Both None when the unit has no spikes in its trials or no trials."""
    spikes = check_spike_times(spikes)
    counts = np.asarray(trial_spike_counts, float)
    durations = np.asarray(trial_durations, float)
    total = float(durations.sum())
    if len(spikes) < 2 or total <= 0 or counts.sum() == 0:
        return None, None
    isis = np.diff(spikes)
    keep = np.ones(len(spikes), bool)
    keep[1:] = isis > min_isi
    spikes = spikes[keep]
    isis = np.diff(spikes)
    avg_rate = float(counts.sum()) / total
    violations = int((isis < thresh).sum())
    violation_time = 2 * len(spikes) * (thresh - min_isi)
    return float(violations / violation_time / avg_rate), avg_rate


# --- ephys.UnitCellType -------------------------------------------------------------------------

def waveform_width_ms(waveform, sampling_rate: float, upsample: int = WAVEFORM_UPSAMPLE) -> float | None:
    """Trough-to-peak time (ms) of a mean waveform: cubic spline upsampled ``upsample`` times, the
    trough its minimum, the peak the maximum after the trough (MAP: |argmax - argmin|; the peak
    before the trough of a clipped waveform is not a repolarisation). None for an empty or flat one."""
    from scipy.interpolate import CubicSpline

    w = np.asarray(waveform, float).ravel()
    if len(w) < 4 or not np.all(np.isfinite(w)) or np.ptp(w) == 0:
        return None
    fine = np.linspace(0, len(w) - 1, len(w) * upsample)
    up = CubicSpline(np.arange(len(w)), w)(fine)
    trough = int(np.argmin(up))
    if trough == len(up) - 1:
        return None
    peak = trough + int(np.argmax(up[trough:]))
    return float((fine[peak] - fine[trough]) / sampling_rate * 1000.0)


def cell_type(width_ms: float | None, fs_max_ms: float = FS_MAX_WIDTH_MS) -> str:
    """'FS' below ``fs_max_ms``, 'Pyr' otherwise (MAP's rule), 'not classified' without a width."""
    if width_ms is None:
        return "not classified"
    return "FS" if width_ms < fs_max_ms else "Pyr"


# --- ephys.MAPClusterMetric ---------------------------------------------------------------------

def drift_metric(trial_spike_counts, trial_durations, window: int = DRIFT_WINDOW,
                 downsample: int = DRIFT_DOWNSAMPLE) -> float | None:
    """MAP's drift metric: per-trial rates (in trial order), moving average over ``window`` trials
    (``np.convolve(..., 'same')``), every ``downsample``-th kept; the fraction of those outside the
    5-95 % range of a Poisson distribution with the mean trial rate. None without trials."""
    from scipy.stats import poisson

    counts = np.asarray(trial_spike_counts, float)
    durations = np.asarray(trial_durations, float)
    if len(counts) == 0:
        return None
    rates = counts / durations
    mean_rate = float(np.mean(rates))
    smoothed = np.convolve(rates, np.ones(window) / window, "same")[::downsample]
    cdf = poisson.cdf(smoothed, mean_rate)
    return float(np.logical_or(cdf > 0.95, cdf < 0.05).sum() / len(cdf))


# --- ephys.UnitPassingCriteria ------------------------------------------------------------------

# criterion -> (metric name, comparison): a unit passes when every metric it has satisfies it
CRITERIA = {
    "isi_violation": ("isi_violation", "max_isi_violation", "<"),
    "amplitude_cutoff": ("amplitude_cutoff", "max_amplitude_cutoff", "<"),
    "presence_ratio": ("presence_ratio", "min_presence_ratio", ">"),
    "drift_metric": ("drift_metric", "max_drift_metric", "<"),
    "unit_amp": ("unit_amp", "min_unit_amp", ">"),
    "avg_firing_rate": ("avg_firing_rate", "min_avg_firing_rate", ">"),
}


def passing_criteria(metrics: dict, thresholds: dict) -> tuple[bool, list[str]]:
    """(passed, failed criteria). A metric that is missing or null (e.g. JRCLUST has no amplitude
    cutoff) is not tested; a threshold that is null is not applied."""
    failed = []
    for name, (metric, limit, op) in CRITERIA.items():
        value, bound = metrics.get(metric), thresholds.get(limit)
        if value is None or bound is None or not np.isfinite(float(value)):
            continue
        ok = float(value) < float(bound) if op == "<" else float(value) > float(bound)
        if not ok:
            failed.append(name)
    return not failed, failed


# --- psth ---------------------------------------------------------------------------------------

def psth_edges(window=PSTH_WINDOW, bin_s: float = PSTH_BIN_S) -> np.ndarray:
    """Bin edges (s): ``window`` in ``bin_s`` bins, both ends included (-3 .. 3 s: 150 bins)."""
    n = int(round((window[1] - window[0]) / bin_s))
    return np.arange(n + 1) * bin_s + window[0]


def unit_psth(spikes, go_cues, edges=None) -> np.ndarray | None:
    """Mean firing rate (Hz) per bin around the go cues: spike counts of the session-wide train in
    each bin relative to each go cue, summed, / n trials / bin width. None without trials."""
    edges = psth_edges() if edges is None else np.asarray(edges, float)
    spikes = check_spike_times(spikes)
    go = np.sort(np.asarray(go_cues, float))
    if len(go) == 0:
        return None
    counts = psth_counts(spikes, go, edges)
    return counts / len(go) / float(edges[1] - edges[0])


def psth_counts(spikes: np.ndarray, go_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted ``spikes`` in the bins ``edges`` around every sorted go cue, summed over cues.

    Binned as ``np.histogram`` of ``spikes - go`` (the last bin includes its right edge): spike
    times and go cues sit on sample grids, so relative times often fall exactly on a bin edge."""
    n_bins = len(edges) - 1
    width = float(edges[-1] - edges[0])
    margin = 1e-6 * max(1.0, width)
    lo = np.searchsorted(spikes, go_sorted + edges[0] - margin)
    hi = np.searchsorted(spikes, go_sorted + edges[-1] + margin, side="right")
    n = hi - lo
    total = int(n.sum())
    if not total:
        return np.zeros(n_bins, np.int64)
    first = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
    rel = spikes[np.arange(total) + first] - np.repeat(go_sorted, n)
    rel = rel[(rel >= edges[0]) & (rel <= edges[-1])]
    bins = np.minimum(np.searchsorted(edges, rel, side="right") - 1, n_bins - 1)
    return np.bincount(bins, minlength=n_bins)


def period_rates(spikes, go_cues, start: float, end: float) -> np.ndarray:
    """Per-trial firing rate (Hz) in [go + start, go + end)."""
    spikes = check_spike_times(spikes)
    go = np.asarray(go_cues, float)
    lo = np.searchsorted(spikes, go + start, side="left")
    hi = np.searchsorted(spikes, go + end, side="left")
    return (hi - lo) / float(end - start)


@dataclass(frozen=True)
class Selectivity:
    selectivity: str
    ipsi_rate: float
    contra_rate: float
    p_value: float | None


def period_selectivity(ipsi_rates, contra_rates, alpha: float = SELECTIVITY_ALPHA) -> Selectivity:
    """Ipsi vs contra per-trial rates: two-sided Mann-Whitney U test; selective when p < alpha, to
    the side of the higher mean rate. Non-selective (p None) when a side has no trials or all rates
    are equal."""
    from scipy.stats import mannwhitneyu

    ipsi = np.asarray(ipsi_rates, float)
    contra = np.asarray(contra_rates, float)
    ipsi_mean = float(ipsi.mean()) if len(ipsi) else float("nan")
    contra_mean = float(contra.mean()) if len(contra) else float("nan")
    if not len(ipsi) or not len(contra) or np.ptp(np.concatenate([ipsi, contra])) == 0:
        return Selectivity("non-selective", ipsi_mean, contra_mean, None)
    p = float(mannwhitneyu(ipsi, contra, alternative="two-sided").pvalue)
    if p >= alpha:
        label = "non-selective"
    else:
        label = "ipsi-selective" if ipsi_mean > contra_mean else "contra-selective"
    return Selectivity(label, ipsi_mean, contra_mean, p)


def unit_selectivity(periods: list[tuple[str, float | None]]) -> str:
    """A unit's selectivity from its periods' (selectivity, p): that of its most significant
    selective period; non-selective when no period is."""
    selective = [(p, s) for s, p in periods if s != "non-selective" and p is not None]
    if not selective:
        return "non-selective"
    return min(selective)[1]


def hemisphere_from_ml(ml_location) -> str | None:
    """'left' / 'right' from an insertion's ML coordinate (um, right positive); None at 0 or unknown."""
    if ml_location is None:
        return None
    ml = float(ml_location)
    return "left" if ml < 0 else "right" if ml > 0 else None


# --- tracking.TrackingQC ------------------------------------------------------------------------

@dataclass(frozen=True)
class Jumps:
    n_frames: int
    n_jumps: int
    max_jump: float | None


def tracking_jumps(x, y, likelihood, threshold_px: float = JUMP_THRESHOLD_PX,
                   min_likelihood: float = JUMP_MIN_LIKELIHOOD) -> Jumps:
    """Frame-to-frame moves of one feature longer than ``threshold_px``, counted between
    consecutive frames that both have likelihood >= ``min_likelihood``; max_jump is the longest
    such move (None when no pair of consecutive frames qualifies)."""
    x, y, lik = (np.asarray(a, float).ravel() for a in (x, y, likelihood))
    if not (len(x) == len(y) == len(lik)):
        raise AnalysisInputError(f"x, y and likelihood differ in length ({len(x)}, {len(y)}, {len(lik)})")
    if len(x) < 2:
        return Jumps(len(x), 0, None)
    step = np.hypot(np.diff(x), np.diff(y))
    sure = (lik[1:] >= min_likelihood) & (lik[:-1] >= min_likelihood) & np.isfinite(step)
    if not sure.any():
        return Jumps(len(x), 0, None)
    return Jumps(len(x), int((step[sure] > threshold_px).sum()), float(step[sure].max()))

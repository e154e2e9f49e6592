"""``ephys``: extracellular recordings. Lookups now; the ephys ingest adds insertions and units.

Names follow MAP's ``pipeline/ephys.py``.
"""

from __future__ import annotations

import functools

import datajoint as dj
import numpy as np

from . import experiment, lab  # noqa: F401  (declares the upstream schemas first)
from .db import schema as _schema

schema = _schema("ephys")


@schema
class ProbeInsertionQualityType(dj.Lookup):
    definition = """
    probe_insertion_quality : varchar(32)
    """
    contents = [("good",), ("acceptable",), ("bad",), ("drift",), ("not_in_target",)]


@schema
class ClusteringMethod(dj.Lookup):
    definition = """
    clustering_method : varchar(16)
    """
    contents = [(m,) for m in ("jrclust_v3", "jrclust_v4", "kilosort", "kilosort2", "kilosort2.5", "kilosort3", "kilosort4")]


@schema
class UnitQualityType(dj.Lookup):
    definition = """
    # Quality
    unit_quality : varchar(100)
    ---
    unit_quality_description : varchar(4000)
    """
    contents = [
        ("good", "single unit"),
        ("ok", "probably a single unit, but could be contaminated"),
        ("multi", "multi unit"),
        ("mua", "multi unit (Kilosort/phy label)"),
        ("noise", "noise (Kilosort/phy label)"),
        ("unsorted", "nobody labelled the cluster (no KSLabel, group or JRCLUST note)"),
        ("all", "all units"),
    ]


@schema
class CellType(dj.Lookup):
    definition = """
    #
    cell_type : varchar(100)
    ---
    cell_type_description : varchar(4000)
    """
    contents = [
        ("Pyr", "putative pyramidal"),
        ("FS", "fast spiking"),
        ("not classified", "intermediate spike-width that falls between spike-width thresholds for FS or Putative pyramidal cells"),
        ("all", "all types"),
    ]


@schema
class ClusteringLabel(dj.Lookup):
    definition = """
    clustering_label : varchar(32)
    ---
    clustering_label_description : varchar(1000)
    """
    contents = [("curated", "phy curation was done"), ("uncurated", "no manual curation")]


# --- recordings and units (filled by ingest.ephys.EphysIngest) ------------------------------------
#
# Storage at Neuropixels scale. MAP kept one ``Unit.TrialSpikes`` row (with a blob) per unit x
# trial: 400 units x 500 trials = 200,000 blobs per probe, slow to insert and slower to fetch.
# Here a unit's spikes are stored once, session-wide, in ``Unit.spike_times``; ``Unit.TrialSpikes``
# keeps MAP's key (unit x trial) but each row only records where the trial's spikes sit in the
# unit's array (``spike_start``, ``spike_count``) and the trial's go cue on the recording clock, so
# ``spike_times`` relative to the go cue is cut from the session array when fetched (one fetch of
# each unit's array, whatever the number of trials). ``Unit.UnitTrial`` is the same table under
# MAP's other name. A PSTH over a whole session needs only ``Unit.spike_times`` and the go cues in
# ``TrialEvent`` (see :func:`session_psth`).


@schema
class ProbeInsertion(dj.Imported):
    definition = """
    # a probe in a session's recording (MAP: Manual; here created by the ephys ingest from the meta)
    -> experiment.Session
    insertion_number : int16             # probe number = SpikeGLX imec index + 1
    ---
    -> lab.Probe
    -> lab.ElectrodeConfig
    """

    class RecordingSystemSetup(dj.Part):
        definition = """
        -> master
        ---
        sampling_rate : float64          # (Hz) imSampRate of the .ap.meta (MAP: int)
        """

    class InsertionLocation(dj.Part):
        definition = """
        -> master
        ---
        -> lab.SkullReference
        ap_location : decimal(6,2)       # (um) anterior-posterior; ref is 0; more anterior is more positive
        ml_location : decimal(6,2)       # (um) medial axis; ref is 0; more right is more positive
        depth : decimal(6,2)             # (um) manipulator depth relative to the brain surface; more ventral is more negative
        theta = null : decimal(5,2)      # (deg) elevation: rotation about the ml-axis [0, 180], w.r.t. the z+ axis
        phi = null : decimal(5,2)        # (deg) azimuth: rotation about the dv-axis [0, 360], w.r.t. the x+ axis
        beta = null : decimal(5,2)       # (deg) rotation about the shank of the probe [-180, 180]
        """

    class InsertionNote(dj.Part):
        definition = """
        -> master
        ---
        insertion_note : varchar(1000)
        """


@schema
class Clustering(dj.Imported):
    definition = """
    # the current spike sorting of an insertion by one method (MAP's ClusteringLabel, per insertion)
    -> ProbeInsertion
    -> ClusteringMethod
    ---
    -> ClusteringLabel                   # curated (phy.log / JRCLUST notes present) or uncurated
    clustering_time : datetime           # modification time of the newest sorting file
    clustering_path : varchar(1024)      # sorting folder or file, relative to its share root
    quality_control : bool               # a human looked at it (= curated)
    manual_curation : bool               # = curated
    clustering_note = null : varchar(2000)
    """


@schema
class Unit(dj.Imported):
    definition = """
    # sorted unit (MAP's keys and attributes)
    -> Clustering
    unit : int32                         # cluster id as the sorter numbers it
    ---
    unit_uid : int64                     # unique across sessions and animals
    -> UnitQualityType
    -> lab.ElectrodeConfig.Electrode     # site on the electrode for which the unit has the largest amplitude
    unit_posx : float64                  # (um) x position of the unit (its peak site) relative to the probe's tip
    unit_posy : float64                  # (um) y position of the unit (its peak site) relative to the probe's tip
    spike_times : <blob>                 # (s) float64, from the first sample of the recording (session-wide)
    spike_sites : <blob>                 # electrode (1-based, lab.ProbeType.Electrode) of each spike
    spike_depths : <blob>                # (um) float32 depth (y) of each spike
    unit_amp : float64                   # (uV) mean spike amplitude
    unit_snr = null : float64
    waveform : <blob>                    # (uV) mean waveform on the peak channel
    """

    class TrialSpikes(dj.Part):
        definition = """
        # the unit's spikes in one behaviour trial (MAP's TrialSpikes and UnitTrial, one table)
        -> master
        -> experiment.SessionTrial
        ---
        spike_start : int32              # index of the trial's first spike in Unit.spike_times
        spike_count : int32              # spikes of the unit in the trial: [trial start, next trial start)
        go_cue_time : float64            # (s) the trial's go cue, recording clock
        """

        def to_dicts(self, order_by=None, limit=None, offset=None, squeeze=False):
            """Rows with MAP's ``spike_times`` (s, relative to the go cue) added."""
            rows = super().to_dicts(order_by=order_by, limit=limit, offset=offset, squeeze=squeeze)
            if rows and "spike_start" in rows[0]:
                for row, times in zip(rows, trial_spike_times(rows)):
                    row["spike_times"] = times
            return rows

        def to_arrays(self, *attrs, include_key=False, order_by=None, limit=None, offset=None, squeeze=False):
            """As DataJoint's, and ``spike_times`` (s, relative to the go cue) may be asked for."""
            if "spike_times" not in attrs:
                return super().to_arrays(*attrs, include_key=include_key, order_by=order_by, limit=limit,
                                         offset=offset, squeeze=squeeze)
            rows = self.to_dicts(order_by=order_by or "KEY", limit=limit, offset=offset)
            if include_key:
                keys = [{k: r[k] for k in self.primary_key} for r in rows]
            columns = []
            for attr in attrs:
                values = [r[attr] for r in rows]
                if attr == "spike_times":
                    column = np.empty(len(values), dtype=object)
                    column[:] = values
                else:
                    column = np.array(values)
                columns.append(column)
            if include_key:
                return (keys, *columns)
            return columns[0] if len(columns) == 1 else tuple(columns)

    UnitTrial = TrialSpikes  # MAP's "trials a unit is in": the same rows


@schema
class TrialEvent(dj.Imported):
    definition = """
    # behaviour trial events on the recording's clock (trial start from the NIDQ sync edges)
    -> experiment.BehaviorTrial
    trial_event_id : int16               # 0: bitcodestart (the sync edge); n: experiment.TrialEvent n - 1
    ---
    -> experiment.TrialEventType
    trial_event_time : decimal(12,6)     # (s) recording clock, from the first sample (MAP: decimal(10,5))
    """


@schema
class ClusterMetric(dj.Imported):
    definition = """
    # quality metrics of a sorted unit (metrics.csv of ecephys_spike_sorting, or JRCLUST's)
    -> Unit
    epoch_name_quality_metrics : varchar(64)
    ---
    presence_ratio = null : float32      # fraction of the epoch in which spikes are present
    amplitude_cutoff = null : float32    # estimate of the miss rate from the amplitude histogram
    isolation_distance = null : float32  # distance to the nearest cluster in Mahalanobis space
    l_ratio = null : float32
    d_prime = null : float32             # classification accuracy based on LDA
    nn_hit_rate = null : float32
    nn_miss_rate = null : float32
    silhouette_score = null : float32    # standard metric for cluster overlap
    max_drift = null : float32           # maximum change in spike depth throughout the recording
    cumulative_drift = null : float32    # cumulative change in spike depth throughout the recording
    firing_rate = null : float32         # (Hz)
    isi_violation = null : float32       # ISI violation rate (JRCLUST: unitISIRatio)
    """


@schema
class WaveformMetric(dj.Imported):
    definition = """
    -> Unit
    epoch_name_waveform_metrics : varchar(64)
    ---
    duration = null : float32
    halfwidth = null : float32
    pt_ratio = null : float32
    repolarization_slope = null : float32
    recovery_slope = null : float32
    spread = null : float32
    velocity_above = null : float32
    velocity_below = null : float32
    """


@schema
class ArchivedClustering(dj.Manual):
    definition = """
    # a clustering replaced by a newer one of the same insertion and method (mapshell ingest-ephys --replace)
    -> ProbeInsertion
    -> ClusteringMethod
    archive : int16                      # 1, 2, ... per insertion and method, oldest first
    ---
    -> ClusteringLabel
    clustering_time : datetime
    clustering_path : varchar(1024)
    archival_time : datetime
    quality_control : bool
    manual_curation : bool
    clustering_note = null : varchar(2000)
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit : int32
        ---
        unit_uid : int64
        -> UnitQualityType
        -> lab.ElectrodeConfig.Electrode
        unit_posx : float64
        unit_posy : float64
        spike_times : <blob>
        spike_sites : <blob>
        spike_depths : <blob>
        unit_amp : float64
        unit_snr = null : float64
        waveform : <blob>
        """

    class ClusterMetric(dj.Part):
        definition = """
        -> master.Unit
        epoch_name_quality_metrics : varchar(64)
        ---
        presence_ratio = null : float32
        amplitude_cutoff = null : float32
        isolation_distance = null : float32
        l_ratio = null : float32
        d_prime = null : float32
        nn_hit_rate = null : float32
        nn_miss_rate = null : float32
        silhouette_score = null : float32
        max_drift = null : float32
        cumulative_drift = null : float32
        firing_rate = null : float32
        isi_violation = null : float32
        """

    class WaveformMetric(dj.Part):
        definition = """
        -> master.Unit
        epoch_name_waveform_metrics : varchar(64)
        ---
        duration = null : float32
        halfwidth = null : float32
        pt_ratio = null : float32
        repolarization_slope = null : float32
        recovery_slope = null : float32
        spread = null : float32
        velocity_above = null : float32
        velocity_below = null : float32
        """


UNIT_KEY = ("subject_id", "session", "insertion_number", "clustering_method", "unit")


def trial_spike_times(rows: list[dict]) -> list[np.ndarray]:
    """Spike times (s, relative to the go cue) of TrialSpikes rows: each unit's session-wide
    array is fetched once and cut at the rows' slices."""
    units = {tuple(r[k] for k in UNIT_KEY) for r in rows}
    arrays: dict[tuple, np.ndarray] = {}
    by_insertion: dict[tuple, list] = {}
    for u in units:
        by_insertion.setdefault(u[:4], []).append(u[4])
    for (subject, session, insertion, method), unit_ids in by_insertion.items():
        query = Unit & {"subject_id": subject, "session": session, "insertion_number": insertion,
                        "clustering_method": method} & [{"unit": int(u)} for u in unit_ids]
        for unit, times in zip(*query.to_arrays("unit", "spike_times")):
            arrays[(subject, session, insertion, method, int(unit))] = np.asarray(times, float).ravel()
    out = []
    for r in rows:
        times = arrays[tuple(r[k] for k in UNIT_KEY[:4]) + (int(r["unit"]),)]
        start = int(r["spike_start"])
        out.append(times[start:start + int(r["spike_count"])] - float(r["go_cue_time"]))
    return out


def go_cues(session_key: dict) -> tuple[np.ndarray, np.ndarray]:
    """(trial numbers, go-cue times on the recording clock) of a session's ephys trials."""
    rows = (TrialEvent & session_key & "trial_event_type = 'go'").to_arrays("trial", "trial_event_time", order_by="trial")
    trials, times = rows
    return np.asarray(trials, int), np.asarray(times, float)


def session_psth(session_key: dict, window=(-3.0, 2.0), bin_s: float = 0.01, restriction=None):
    """Spike counts in ``bin_s`` bins around the go cue, per unit, summed over the session's trials.

    Returns (unit keys, bin edges, counts[unit, bin], n_trials). Reads each unit's session-wide
    array once; no per-trial rows are fetched."""
    _, go = go_cues(session_key)
    edges = np.arange(round((window[1] - window[0]) / bin_s) + 1) * bin_s + window[0]
    query = Unit & session_key
    if restriction is not None:
        query = query & restriction
    keys, times = query.to_arrays("spike_times", include_key=True, order_by="KEY")
    go_sorted = np.sort(go)
    counts = np.zeros((len(keys), len(edges) - 1), np.int64)
    for i, t in enumerate(times):
        counts[i] = psth_counts(np.asarray(t, float).ravel(), go_sorted, edges)
    return keys, edges, counts, len(go)


def psth_counts(spikes: np.ndarray, go_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted ``spikes`` (s) in the bins ``edges`` around every go cue, summed over cues."""
    n_bins = len(edges) - 1
    lo = np.searchsorted(spikes, go_sorted + edges[0])
    hi = np.searchsorted(spikes, go_sorted + edges[-1])
    n = hi - lo
    total = int(n.sum())
    if not total:
        return np.zeros(n_bins, np.int64)
    first = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
    index = np.arange(total) + first
    rel = spikes[index] - np.repeat(go_sorted, n) - edges[0]
    bins = np.minimum((rel / (edges[1] - edges[0])).astype(np.int64), n_bins - 1)
    return np.bincount(bins, minlength=n_bins)


# --- computed unit statistics (issue 8) ------------------------------------------------------------
#
# Each make() fetches its inputs and calls one function of pipeline.analysis, where the numbers
# are computed (and tested on their own). `mapshell automate-computation` populates these with
# DataJoint's job reservation, in the order of pipeline.analysis_commands.computation_tables().

from . import analysis as _analysis  # noqa: E402


@functools.lru_cache(maxsize=8)
def _session_trial_durations(subject_id: int, session: int) -> dict[int, float]:
    """Trial -> duration (s, stop - start, as MAP) of one session. The same for every unit of the
    session, so a worker fetches it once per session instead of joining it again for each unit."""
    trials, starts, stops = (experiment.SessionTrial & {"subject_id": subject_id, "session": session}).to_arrays(
        "trial", "start_time", "stop_time")
    return {int(t): float(b) - float(a) for t, a, b in zip(trials, starts, stops)}


def _unit_trials(key: dict) -> tuple[np.ndarray, np.ndarray]:
    """(spike counts, durations in s) of a unit's trials, in trial order."""
    durations = _session_trial_durations(key["subject_id"], key["session"])
    trials, counts = (Unit.TrialSpikes & key).to_arrays("trial", "spike_count", order_by="trial")
    if any(int(t) not in durations for t in trials):  # the session was loaded again since: refetch
        _session_trial_durations.cache_clear()
        durations = _session_trial_durations(key["subject_id"], key["session"])
    return np.asarray(counts, float), np.array([durations[int(t)] for t in trials], float)


@schema
class UnitStat(dj.Computed):
    definition = """
    # ISI violations and firing rate of a unit (MAP)
    -> Unit
    ---
    isi_violation = null : float64       # MAP's ISI violation rate (ISIs < 2 ms), session-wide spike train
    avg_firing_rate = null : float64     # (Hz) spikes in the unit's trials / the trials' total duration
    """

    def make(self, key):
        spikes = (Unit & key).fetch1("spike_times")
        counts, durations = _unit_trials(key)
        isi, rate = _analysis.unit_stat(spikes, counts, durations)
        self.insert1({**key, "isi_violation": isi, "avg_firing_rate": rate})


@schema
class UnitCellType(dj.Computed):
    definition = """
    # fast spiking or putative pyramidal, from the trough-to-peak width of the mean waveform (MAP)
    -> Unit
    ---
    -> CellType
    waveform_width = null : float64      # (ms) trough to the following peak, cubic spline x100
    """

    def make(self, key):
        waveform = (Unit & key).fetch1("waveform")
        rate = (ProbeInsertion.RecordingSystemSetup & key).fetch1("sampling_rate")
        width = _analysis.waveform_width_ms(waveform, rate)
        self.insert1({**key, "cell_type": _analysis.cell_type(width), "waveform_width": width})


@schema
class MAPClusterMetric(dj.Computed):
    definition = """
    # MAP's own cluster metrics
    -> Unit
    """

    class DriftMetric(dj.Part):
        definition = """
        -> master
        ---
        drift_metric = null : float64    # fraction of (6-trial smoothed) trial rates outside the Poisson 5-95 percentiles
        """

    def make(self, key):
        counts, durations = _unit_trials(key)
        self.insert1(key)
        self.DriftMetric.insert1({**key, "drift_metric": _analysis.drift_metric(counts, durations)})


@schema
class PassingCriteriaThreshold(dj.Lookup):
    definition = """
    # quality thresholds of UnitPassingCriteria per brain region ('default' when none is known)
    criteria_region : varchar(32)        # 'default' or a brain area
    ---
    max_isi_violation = null : float64
    max_amplitude_cutoff = null : float64
    min_presence_ratio = null : float64
    max_drift_metric = null : float64
    min_unit_amp = null : float64        # (uV)
    min_avg_firing_rate = null : float64 # (Hz)
    """
    contents = [
        ("default", 0.5, 0.1, 0.9, 0.1, 70.0, 0.2),
        ("ALM", 0.5, 0.1, 0.9, 0.1, 70.0, 0.2),
        ("Medulla", 0.5, 0.1, 0.9, 0.1, 150.0, 0.2),
        ("Midbrain", 0.5, 0.1, 0.9, 0.1, 150.0, 0.2),
        ("Striatum", 0.5, 0.1, 0.9, 0.1, 70.0, 0.2),
        ("Thalamus", 0.5, 0.1, 0.9, 0.1, 70.0, 0.2),
    ]


def unit_region(key: dict) -> str | None:
    """The brain area (lab.BrainArea) of a unit, if histology has placed it, else None.

    Imported here, not at the top: histology's tables depend on this module's."""
    from . import histology

    return histology.unit_brain_area(key)


@schema
class UnitPassingCriteria(dj.Computed):
    definition = """
    # does the unit pass the quality criteria of its region (MAP)
    -> Unit
    ---
    -> PassingCriteriaThreshold          # the threshold set applied
    criteria_passed : bool
    failed_criteria = '' : varchar(255)  # comma-separated names of the failed criteria
    """

    @property
    def key_source(self):
        return Unit.proj() & UnitStat & MAPClusterMetric

    def make(self, key):
        stat = (UnitStat & key).fetch1()
        metrics = {"isi_violation": stat["isi_violation"], "avg_firing_rate": stat["avg_firing_rate"],
                   "drift_metric": (MAPClusterMetric.DriftMetric & key).fetch1("drift_metric"),
                   "unit_amp": (Unit & key).fetch1("unit_amp")}
        quality = (ClusterMetric & key).to_dicts(limit=1)
        if quality:
            metrics.update(amplitude_cutoff=quality[0]["amplitude_cutoff"], presence_ratio=quality[0]["presence_ratio"])
        region = unit_region(key)
        if region is None or not (PassingCriteriaThreshold & {"criteria_region": region}):
            region = "default"
        thresholds = (PassingCriteriaThreshold & {"criteria_region": region}).fetch1()
        passed, failed = _analysis.passing_criteria(metrics, thresholds)
        self.insert1({**key, "criteria_region": region, "criteria_passed": passed, "failed_criteria": ",".join(failed)})

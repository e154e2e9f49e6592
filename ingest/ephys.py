"""Ephys ingest: CatGT recordings + Kilosort/JRCLUST sortings -> ephys.ProbeInsertion, Unit, ...

The share scan turns every CatGT ``.ap.meta`` (``<h2o>/catgt_<run>_g0/<run>_g0_imec<N>/...``) into
an :class:`EphysRunFolder` row (one per recording run) and an :class:`EphysProbeMeta` row (one per
probe, with the meta's ``fileCreateTime``). :class:`EphysIngest` takes its keys from there; one
make() loads every probe of the run in one transaction:

1. the run is matched to the behaviour session of the same water-restriction number whose start
   is within 120 s of every probe's ``fileCreateTime`` (none or several -> an error listing the
   candidates; nothing is guessed);
2. each probe becomes an ``ephys.ProbeInsertion`` (probe serial, type, electrode configuration
   hashed from the saved electrodes, insertion number = imec + 1);
3. the NIDQ bitcodes (``*.XA_0_0.txt`` + ``*.XA_1_2.txt``, else ``*_bitcode.mat``) are matched to
   the behaviour ``TrialNote`` bitcodes; the trial windows and go cues on the recording clock go
   into ``ephys.TrialEvent``;
4. every sorting found beside a probe (Kilosort/phy folder, JRCLUST ``*_res.mat``) becomes an
   ``ephys.Clustering`` with its units, per-trial slices and metrics.

Units and their per-trial rows are written with multi-row statements through the database
driver (blobs packed in DataJoint's own format, so DataJoint fetches them as usual): DataJoint's
row-by-row insert and zlib compression of random spike times were most of the ingest time.

Re-sorting: a run already loaded is never silently reloaded. When files of a loaded run change on
the share (e.g. phy re-curation, a new sorting folder), the stage summary says so;
:func:`request_replace` (``mapshell ingest-ephys --replace``) then moves the loaded clusterings to
``ephys.ArchivedClustering`` and loads what is on disk now, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import datajoint as dj
import numpy as np

from pipeline import bulk, ephys, experiment, lab
from pipeline.db import schema as _schema

from . import share
from .readers.errors import ReaderError
from .readers.jrclust import read_jrclust_v4
from .readers.kilosort import read_kilosort
from .readers.sorting import SortingOutput
from .readers.spikeglx import Recording, electrode_config, read_meta, read_recording
from .readers.sync import BitcodeMismatch, match_trials, read_bitcode_mat, read_sync_bitcodes

schema = _schema("ingest_ephys")

MATCH_WINDOW_S = 120
META_RE = re.compile(r"^(?P<h2o>[^/]+)/(?P<run>catgt_[^/]+)/(?P<probe>[^/]+)/[^/]+\.imec(?P<imec>\d+)\.ap\.meta$")
RUN_RE = re.compile(r"^(?P<h2o>[^/]+)/(?P<run>catgt_[^/]+)/")
METHODS = ("jrclust_v3", "jrclust_v4", "kilosort", "kilosort2", "kilosort2.5", "kilosort3", "kilosort4")
MAX_STATEMENT_BYTES = 6 << 20     # raw bytes per statement: escaped, under MySQL/MariaDB's default 16 MB max_allowed_packet
TRIAL_ROWS_PER_STATEMENT = 20_000


# --- what the scan found -----------------------------------------------------------------------

@schema
class EphysRunFolder(dj.Manual):
    definition = """
    # a CatGT run folder found by the share scan (one recording session, all its probes)
    water_restriction_number : varchar(16)
    ephys_run : varchar(128)             # folder name, e.g. catgt_dl36_20230823_g0
    ---
    -> share.ShareRoot
    folder : varchar(512)                # relative to the root
    """


@schema
class EphysProbeMeta(dj.Manual):
    definition = """
    # an .ap.meta of a run folder, as the scan read it
    -> EphysRunFolder
    imec : int16                         # N of imec<N>
    ---
    -> share.ShareFile
    file_create_time = null : datetime   # fileCreateTime of the meta (null if unreadable)
    meta_problem = null : varchar(1000)  # why the scan could not read it
    """


@schema
class EphysReplace(dj.Manual):
    definition = """
    # a loaded run whose clusterings are to be archived and reloaded (mapshell ingest-ephys --replace)
    -> EphysRunFolder
    ---
    requested : datetime
    """


def _run_files(root_hash: str, folder: str) -> list[tuple[str, int, float]]:
    """(relpath, size, mtime) of the present files the share record holds under a run folder."""
    prefix = folder + "/"
    pattern = folder.replace("'", "''") + "/%"
    rows = (share.ShareFile & {"root_hash": root_hash, "status": "present"} & f"relpath LIKE '{pattern}'")
    rels, sizes, mtimes = rows.to_arrays("relpath", "size", "mtime")
    return sorted((r, int(s), float(m)) for r, s, m in zip(rels, sizes, mtimes) if r.startswith(prefix))


@share.after_scan("ephys")
def record_recordings(root: dict, report: share.RootReport) -> None:
    """New or changed CatGT metas -> run/probe rows; a run with changed files gets another try."""
    runs = {(h2o, run) for h2o, run in bulk.select_rows(EphysRunFolder, ("water_restriction_number", "ephys_run"))}
    metas = {(h2o, run, int(imec)) for h2o, run, imec in
             bulk.select_rows(EphysProbeMeta, ("water_restriction_number", "ephys_run", "imec"))}
    run_rows, meta_rows, meta_updates = [], [], []
    for rel in report.new + report.changed:
        match = META_RE.match(rel)
        if not match:
            continue
        run_key = (match["h2o"], match["run"])
        created, problem = None, None
        try:
            raw = read_meta(Path(root["root_path"]) / rel).get("fileCreateTime", "").strip()
            created = dt.datetime.fromisoformat(raw) if raw else None
            problem = None if raw else "meta has no fileCreateTime"
        except (ReaderError, ValueError) as err:
            problem = str(err)[:1000]
        if run_key not in runs:
            runs.add(run_key)
            run_rows.append((*run_key, root["root_hash"], rel.split("/", 2)[0] + "/" + match["run"]))
        row = dict(water_restriction_number=run_key[0], ephys_run=run_key[1], imec=int(match["imec"]),
                   root_hash=root["root_hash"], file_hash=share.path_hash(rel),
                   file_create_time=created, meta_problem=problem)
        if (*run_key, int(match["imec"])) in metas:
            meta_updates.append(row)
        else:
            metas.add((*run_key, int(match["imec"])))
            meta_rows.append(row)
    bulk.insert_rows(EphysRunFolder, ("water_restriction_number", "ephys_run", "root_hash", "folder"), run_rows)
    if meta_rows:
        EphysProbeMeta.insert(meta_rows)
    for row in meta_updates:
        EphysProbeMeta.update1(row)
    touched = {(m["h2o"], m["run"]) for rel in report.new + report.changed + report.vanished
               if (m := RUN_RE.match(rel))}
    if touched:
        # A file fixed (or a sorting added) after a failed ingest gets another try.
        from pipeline.jobs import clear_errors

        clear_errors(EphysIngest, [{"water_restriction_number": h, "ephys_run": r} for h, r in touched])


def registered_runs() -> dj.expression.QueryExpression:
    return (EphysRunFolder & EphysProbeMeta).restrict(lab.WaterRestriction.proj("water_restriction_number"),
                                                      semantic_check=False)


# --- reading one run ---------------------------------------------------------------------------

class SessionMatchError(dj.DataJointError):
    """A recording that matches no behaviour session, or more than one."""


@dataclass
class ProbeData:
    imec: int
    meta_relpath: str
    recording: Recording
    sortings: list[tuple[str, str, SortingOutput]] = field(default_factory=list)  # (method, relpath, output)


@dataclass
class EphysTrials:
    source: Path
    starts: np.ndarray                   # (n_ephys,) s, recording clock, every Bpod trial recorded
    trial_of: dict[int, int]             # ephys trial index -> Bpod trial number (session trials only)
    go_cue: dict[int, float]             # Bpod trial number -> go cue, recording clock


def _time_of_day(value) -> dt.time:
    return (dt.datetime.min + value).time() if isinstance(value, dt.timedelta) else value


def session_starts(subject_id: int) -> list[tuple[dict, dt.datetime]]:
    rows = (experiment.Session & {"subject_id": subject_id}).to_dicts()
    return sorted((({"subject_id": r["subject_id"], "session": r["session"]},
                    dt.datetime.combine(r["session_date"], _time_of_day(r["session_time"]))) for r in rows),
                  key=lambda x: x[1])


def match_session(h2o: str, metas: list[dict], root: Path) -> dict:
    """The one behaviour session all probes' fileCreateTime fall within 120 s of."""
    subject_id = int((lab.WaterRestriction & {"water_restriction_number": h2o}).to_arrays("subject_id")[0])
    sessions = session_starts(subject_id)
    chosen = None
    for meta in metas:
        path = root / meta["relpath"]
        if meta["file_create_time"] is None:
            raise ReaderError(path, meta["meta_problem"] or "meta has no fileCreateTime")
        created = meta["file_create_time"]
        found = [(k, start) for k, start in sessions if abs((start - created).total_seconds()) <= MATCH_WINDOW_S]
        if len(found) != 1:
            nearby = [(k, s) for k, s in sessions if abs((s.date() - created.date()).days) <= 1]
            listed = "; ".join(f"session {k['session']} started {s:%Y-%m-%d %H:%M:%S}" for k, s in (found or nearby)) or "none"
            what = "no behaviour session" if not found else f"{len(found)} behaviour sessions"
            raise SessionMatchError(
                f"{path}: fileCreateTime {created:%Y-%m-%d %H:%M:%S} matches {what} of {h2o} (subject {subject_id}) "
                f"within {MATCH_WINDOW_S} s; {'candidates' if found else 'sessions of that day'}: {listed}. Not guessing: "
                "ingest the behaviour session first, or fix the recording's folder/meta")
        if chosen is not None and found[0][0] != chosen:
            raise SessionMatchError(f"{path}: this probe matches session {found[0][0]['session']}, another probe of the "
                                    f"same run matches session {chosen['session']}")
        chosen = found[0][0]
    return chosen


def clustering_method(folder_name: str) -> str:
    """Kilosort version from the phy folder's name (imec0_ks2, ks25, kilosort3 ...)."""
    m = re.search(r"(?:ks|kilosort)_?(\d)(?:[._]?(\d))?", folder_name.lower())
    if not m:
        return "kilosort"
    method = f"kilosort{m[1]}" + (f".{m[2]}" if m[2] else "")
    return method if method in METHODS else "kilosort"


def find_sortings(root: Path, root_hash: str, probe_dir: str, files: list[str]) -> list[tuple[str, str, str]]:
    """(method, kind, relpath) of each sorting beside a probe, from the share record."""
    prefix = probe_dir + "/"
    found: dict[str, tuple[str, str]] = {}
    for rel in files:
        if not rel.startswith(prefix):
            continue
        inner = rel[len(prefix):]
        parts = inner.split("/")
        if len(parts) == 2 and parts[1] == "spike_times.npy":
            method, kind, where = clustering_method(parts[0]), "kilosort", prefix + parts[0]
        elif len(parts) == 1 and inner.endswith("_res.mat"):
            method, kind, where = "jrclust_v4", "jrclust", rel
        else:
            continue
        if method in found:
            raise ReaderError(root / probe_dir, f"two {method} sortings ({found[method][1]} and {where}); "
                                                "move one away so the pipeline does not have to guess")
        found[method] = (kind, where)
    if not found:
        problems = (share.ScanProblem & {"root_hash": root_hash}).to_dicts()
        for p in problems:
            if p["relpath"] == probe_dir or p["relpath"].startswith(prefix):
                raise ReaderError(root / p["relpath"], f"the share scan could not read it ({p['problem']}), "
                                                       "so the probe's spike sorting cannot be found")
        raise ReaderError(root / probe_dir, "no spike sorting output beside the recording (a Kilosort/phy folder "
                                            "with spike_times.npy, or a JRCLUST *_res.mat)")
    return [(m, kind, where) for m, (kind, where) in sorted(found.items())]


def read_probes(root: Path, root_hash: str, metas: list[dict], files: list[str]) -> list[ProbeData]:
    probes = []
    for meta in metas:
        recording = read_recording(root / meta["relpath"])
        probe = ProbeData(meta["imec"], meta["relpath"], recording)
        probe_dir = meta["relpath"].rsplit("/", 1)[0]
        for method, kind, where in find_sortings(root, root_hash, probe_dir, files):
            reader = read_kilosort if kind == "kilosort" else read_jrclust_v4
            output = reader(root / where, n_samples=recording.n_samples)
            if output.sample_rate and abs(output.sample_rate - recording.sample_rate) > 1.0:
                raise ReaderError(root / where, f"sorted at {output.sample_rate} Hz but the recording's imSampRate "
                                                f"is {recording.sample_rate} Hz: a sorting of another file?")
            probe.sortings.append((method, where, output))
        probes.append(probe)
    return probes


def read_trials(root: Path, folder: str, files: list[str], session_key: dict, duration_s: float) -> EphysTrials:
    """NIDQ trial starts and bitcodes matched to the session's behaviour trials."""
    here = [rel for rel in files if "/" not in rel[len(folder) + 1:]]
    xa0 = [rel for rel in here if rel.endswith(".XA_0_0.txt")]
    xa1 = [rel for rel in here if rel.endswith(".XA_1_2.txt")]
    mats = [rel for rel in here if rel.endswith("_bitcode.mat")]
    for name, found in (("*.XA_0_0.txt", xa0), ("*.XA_1_2.txt", xa1), ("*_bitcode.mat", mats)):
        if len(found) > 1:
            raise ReaderError(root / folder, f"{len(found)} {name} files; expected one per run")
    if xa0 and xa1:
        source = root / xa1[0]
        starts, codes = read_sync_bitcodes(root / xa0[0], source)
    elif mats:
        source = root / mats[0]
        starts, _, codes, _ = read_bitcode_mat(source)
    else:
        raise ReaderError(root / folder, "no trial sync: neither *.XA_0_0.txt with *.XA_1_2.txt nor *_bitcode.mat")
    notes = experiment.TrialNote & session_key & {"trial_note_type": "bitcode"}
    numbers, texts = notes.to_arrays("trial", "trial_note")
    behaviour = {int(n): int(t) for n, t in zip(numbers, texts)}
    mapping = match_trials(codes, behaviour, source=source, max_unmatched=len(codes))  # raises if none match
    trial_of = consistent_trials(mapping, behaviour, len(codes), source)
    if len(starts) and starts[-1] >= duration_s:
        raise ReaderError(source, f"trial start at {starts[-1]:.3f} s is past the end of the recording ({duration_s:.3f} s)")
    go = experiment.TrialEvent & session_key & "trial_event_type = 'go'"
    go_rel = {int(t): float(v) for t, v in zip(*go.to_arrays("trial", "trial_event_time", order_by="trial_event_id"))}
    go_cue = {t: float(starts[i]) + go_rel.get(t, 0.0) for i, t in trial_of.items()}
    return EphysTrials(source, np.asarray(starts, float), trial_of, go_cue)


def consistent_trials(mapping: dict[int, int], behaviour: dict[int, int], n_ephys: int, source: Path) -> dict[int, int]:
    """Check the bitcode matches against Bpod's numbering; returns ephys index -> session trial.

    The NIDQ records every Bpod trial, training ones too, which the behaviour ingest skips; so
    unmatched ephys trials are fine where Bpod numbering puts a trial that is not a session
    trial, and a mismatch anywhere else (a session trial recorded with another code)."""
    items = sorted(mapping.items())
    unmatched = [i for i in range(n_ephys) if i not in mapping]
    for (i, a), (j, b) in zip(items, items[1:]):
        if j - i != b - a:
            raise BitcodeMismatch(source, f"bitcodes do not match the behaviour session: ephys trials {i} and {j} pair "
                                          f"with Bpod trials {a} and {b}, but {j - i - 1} ephys and {b - a - 1} Bpod trials "
                                          "lie between them", unmatched)
    first_i, first_t = items[0]
    wrong = [first_t + k - first_i for k in unmatched if first_t + k - first_i in behaviour]
    if wrong:
        shown = ", ".join(map(str, wrong[:10])) + (" ..." if len(wrong) > 10 else "")
        raise BitcodeMismatch(source, f"bitcodes do not match the behaviour session: {len(wrong)} behaviour trial(s) "
                                      f"recorded with another code (Bpod trials {shown})", unmatched)
    return {i: t for i, t in items}


# --- writing -----------------------------------------------------------------------------------

def _cursor(table):
    return table.connection._conn.cursor()


def insert_blob_rows(table, columns: tuple[str, ...], rows) -> int:
    """Multi-row INSERTs of rows holding packed blobs, each statement under MAX_STATEMENT_BYTES."""
    table = table() if isinstance(table, type) else table
    quote = table.connection.adapter.quote_identifier
    head = f"INSERT INTO {table.full_table_name} ({', '.join(quote(c) for c in columns)}) VALUES "
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    cursor = _cursor(table)
    batch: list = []
    size = n = 0

    def flush():
        if batch:
            cursor.execute(head + ", ".join([one] * (len(batch) // len(columns))), batch)
            batch.clear()

    for row in rows:
        row_bytes = sum(len(v) for v in row if isinstance(v, (bytes, bytearray)))
        if batch and size + row_bytes > MAX_STATEMENT_BYTES:
            flush()
            size = 0
        batch.extend(row)
        size += row_bytes
        n += 1
    flush()
    return n


def insert_number_rows(table, columns: tuple[str, ...], rows: list[tuple], chunk: int = TRIAL_ROWS_PER_STATEMENT) -> int:
    """Multi-row INSERTs of plain numbers and safe identifiers, as SQL literals (no per-value escaping)."""
    table = table() if isinstance(table, type) else table
    quote = table.connection.adapter.quote_identifier
    head = f"INSERT INTO {table.full_table_name} ({', '.join(quote(c) for c in columns)}) VALUES "
    cursor = _cursor(table)
    for start in range(0, len(rows), chunk):
        cursor.execute(head + ",".join(rows[start:start + chunk]))
    return len(rows)


def pack(value, compress: bool = False) -> bytes:
    """DataJoint's blob format; random spike times do not compress, so they are not tried."""
    packed = dj.blob.pack(value, compress=compress)
    if not compress and len(packed) > MAX_STATEMENT_BYTES:
        packed = dj.blob.pack(value, compress=True)
    return packed


def ensure_probe(recording: Recording, path: Path) -> None:
    existing = (lab.Probe & {"probe": recording.probe_serial}).to_dicts()
    if existing and existing[0]["probe_type"] != recording.probe_type:
        raise ReaderError(path, f"probe {recording.probe_serial} is a {recording.probe_type} here but "
                                f"lab.Probe has it as a {existing[0]['probe_type']}")
    if not existing:
        lab.Probe.insert1({"probe": recording.probe_serial, "probe_type": recording.probe_type}, skip_duplicates=True)


def ensure_electrode_config(recording: Recording) -> dict:
    """The lab.ElectrodeConfig of the saved electrodes (one row per distinct configuration)."""
    probe_type, used = electrode_config(recording)
    electrodes = [e + 1 for e in used]  # MAP numbering: probeinterface index + 1
    digest = lab.electrode_config_hash(probe_type, electrodes)
    found = (lab.ElectrodeConfig & {"electrode_config_hash": digest}).to_dicts()
    if found:
        return {"probe_type": found[0]["probe_type"], "electrode_config_name": found[0]["electrode_config_name"]}
    key = {"probe_type": probe_type, "electrode_config_name": digest}
    lab.ElectrodeConfig.insert1({**key, "electrode_config_hash": digest}, skip_duplicates=True)
    lab.ElectrodeConfig.ElectrodeGroup.insert1({**key, "electrode_group": 0}, skip_duplicates=True)
    lab.ElectrodeConfig.Electrode.insert([{**key, "electrode_group": 0, "electrode": e} for e in electrodes],
                                         skip_duplicates=True)
    return key


def unit_uid(session_key: dict, insertion: int, method: str, unit: int) -> int:
    """Unique across sessions and animals without a counter (as trial_uid)."""
    return ((((session_key["subject_id"] * 1000 + session_key["session"]) * 10 + insertion) * 10
             + METHODS.index(method)) * 100_000 + unit)


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


QUALITY_METRICS = {"presence_ratio": "presence_ratio", "amplitude_cutoff": "amplitude_cutoff",
                   "isolation_distance": "isolation_distance", "l_ratio": "l_ratio", "d_prime": "d_prime",
                   "nn_hit_rate": "nn_hit_rate", "nn_miss_rate": "nn_miss_rate", "silhouette_score": "silhouette_score",
                   "max_drift": "max_drift", "cumulative_drift": "cumulative_drift", "firing_rate": "firing_rate",
                   "isi_violation": "isi_viol"}
JRCLUST_METRICS = {"isolation_distance": "unitIsoDist", "l_ratio": "unitLRatio", "isi_violation": "unitISIRatio"}
WAVEFORM_METRICS = {"duration": "duration", "halfwidth": "halfwidth", "pt_ratio": "PT_ratio",
                    "repolarization_slope": "repolarization_slope", "recovery_slope": "recovery_slope",
                    "spread": "spread", "velocity_above": "velocity_above", "velocity_below": "velocity_below"}
UNIT_COLUMNS = ("subject_id", "session", "insertion_number", "clustering_method", "unit", "unit_uid", "unit_quality",
                "probe_type", "electrode_config_name", "electrode_group", "electrode", "unit_posx", "unit_posy",
                "spike_times", "spike_sites", "spike_depths", "unit_amp", "unit_snr", "waveform")
TRIAL_SPIKE_COLUMNS = ("subject_id", "session", "insertion_number", "clustering_method", "unit", "trial",
                       "spike_start", "spike_count", "go_cue_time")


def group_spikes(output: SortingOutput) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): spikes of unit k are output.spike_times[order[bounds[k]:bounds[k+1]]], in time
    order. A stable sort on 16-bit cluster ids is a radix sort (linear); wider ids fall back."""
    clusters = np.asarray(output.spike_clusters)
    top = int(output.cluster_ids[-1]) if output.n_units else 0
    narrow = clusters.astype(np.uint16) if top < 65536 else clusters
    order = np.argsort(narrow, kind="stable")
    del narrow
    bounds = np.concatenate([[0], np.cumsum(output.spike_counts)])
    return order, bounds


def load_clustering(session_key: dict, insertion: dict, config: dict, probe: ProbeData, method: str, relpath: str,
                    output: SortingOutput, trials: EphysTrials, newest: float) -> int:
    """Clustering, Unit, Unit.TrialSpikes, ClusterMetric and WaveformMetric rows of one sorting."""
    from tqdm import tqdm

    recording = probe.recording
    rate = recording.sample_rate
    ckey = {**insertion, "clustering_method": method}
    ephys.Clustering.insert1({**ckey, "clustering_label": "curated" if output.curated else "uncurated",
                              "clustering_time": dt.datetime.fromtimestamp(newest).replace(microsecond=0),
                              "clustering_path": relpath[:1024], "quality_control": output.curated,
                              "manual_curation": output.curated}, allow_direct_insert=True)
    known_qualities = set(ephys.UnitQualityType.to_arrays("unit_quality").tolist())
    for q in sorted(set(output.quality.values()) - known_qualities):
        ephys.UnitQualityType.insert1({"unit_quality": q, "unit_quality_description": f"label from {output.sorter}"},
                                      skip_duplicates=True)
    electrodes = recording.electrodes
    order, bounds = group_spikes(output)
    # trial windows: [start_k, start_{k+1}) on the recording clock, the last one to the end
    window_edges = np.append(trials.starts, recording.duration_s)
    kept = np.array(sorted(trials.trial_of), int)
    kept_trials = [trials.trial_of[k] for k in kept]
    kept_go = [trials.go_cue[t] for t in kept_trials]
    sid, ses, ins = session_key["subject_id"], session_key["session"], insertion["insertion_number"]
    trial_rows: list[str] = []
    quality_rows, waveform_rows = [], []

    def unit_rows():
        for k, cid in enumerate(tqdm(output.cluster_ids.tolist(), desc=f"imec{probe.imec} {method}", unit="unit",
                                     disable=None, leave=False)):
            index = order[bounds[k]:bounds[k + 1]]
            samples = np.asarray(output.spike_times[index])
            seconds = samples / rate
            channel = int(output.peak_channels[k])
            raw_channel = int(output.channel_map[channel]) if channel < len(output.channel_map) else channel
            if not 0 <= raw_channel < len(electrodes):
                raise ReaderError(output.path, f"unit {cid}: peak channel {channel} is not a saved channel of "
                                               f"{probe.meta_relpath} ({len(electrodes)} channels)")
            site = electrodes[raw_channel]
            x, y = (float(v) for v in output.unit_positions[k])
            if not (math.isfinite(x) and math.isfinite(y)):
                x, y = site.x_um, site.y_um
            amps = np.asarray(output.amplitudes[index], float)
            waveform = output.mean_waveforms.get(cid)
            if waveform is not None:
                waveform = np.asarray(waveform, np.float32)[channel]
            elif output.templates is not None:
                waveform = np.asarray(output.templates[cid if cid < len(output.templates) else 0][:, channel], np.float32)
            else:
                waveform = np.zeros(0, np.float32)
            metrics = output.metrics.get(cid, {})
            snr = _finite(metrics.get("snr", metrics.get("unitSNR")))
            edge_index = np.searchsorted(seconds, window_edges)
            lo, hi = edge_index[kept], edge_index[kept + 1]
            trial_rows.extend(f"({sid},{ses},{ins},'{method}',{cid},{t},{a},{c},{g!r})"
                              for t, a, c, g in zip(kept_trials, lo.tolist(), (hi - lo).tolist(), kept_go))
            if output.sorter == "kilosort" and metrics:
                quality_rows.append({**ckey, "unit": cid,
                                     "epoch_name_quality_metrics": str(metrics.get("epoch_name_quality_metrics") or "complete_session")[:64],
                                     **{a: _finite(metrics.get(c)) for a, c in QUALITY_METRICS.items()}})
                waveform_rows.append({**ckey, "unit": cid,
                                      "epoch_name_waveform_metrics": str(metrics.get("epoch_name_waveform_metrics") or "complete_session")[:64],
                                      **{a: _finite(metrics.get(c)) for a, c in WAVEFORM_METRICS.items()}})
            elif metrics:
                quality_rows.append({**ckey, "unit": cid, "epoch_name_quality_metrics": "complete_session",
                                     "firing_rate": len(samples) / recording.duration_s,
                                     **{a: _finite(metrics.get(c)) for a, c in JRCLUST_METRICS.items()}})
            yield (sid, ses, ins, method, cid, unit_uid(session_key, ins, method, cid), output.quality[cid],
                   config["probe_type"], config["electrode_config_name"], 0, site.electrode + 1, x, y,
                   pack(seconds), pack(np.full(len(samples), site.electrode + 1, np.int32), compress=True),
                   pack(np.full(len(samples), y, np.float32), compress=True),
                   float(amps.mean()) * recording.uv_per_bit if len(amps) else 0.0, snr, pack(waveform))

    n = insert_blob_rows(ephys.Unit, UNIT_COLUMNS, unit_rows())
    insert_number_rows(ephys.Unit.TrialSpikes, TRIAL_SPIKE_COLUMNS, trial_rows)
    if quality_rows:
        ephys.ClusterMetric.insert(quality_rows, allow_direct_insert=True)
    if waveform_rows:
        ephys.WaveformMetric.insert(waveform_rows, allow_direct_insert=True)
    return n


def archive_clustering(ckey: dict) -> int:
    """Copy a current clustering into ArchivedClustering (server-side INSERT ... SELECT), then
    delete it from the current tables; returns the archive number."""
    current = (ephys.Clustering & ckey).to_dicts()[0]
    key = {k: ckey[k] for k in ("subject_id", "session", "insertion_number", "clustering_method")}
    previous = (ephys.ArchivedClustering & key).to_arrays("archive")
    number = int(max(previous, default=0)) + 1
    ephys.ArchivedClustering.insert1({**key, "archive": number, "clustering_label": current["clustering_label"],
                                      "clustering_time": current["clustering_time"],
                                      "clustering_path": current["clustering_path"],
                                      "archival_time": dt.datetime.now().replace(microsecond=0),
                                      "quality_control": current["quality_control"],
                                      "manual_curation": current["manual_curation"],
                                      "clustering_note": current["clustering_note"]})
    cursor = _cursor(ephys.Unit)
    quote = ephys.Unit.connection.adapter.quote_identifier
    where = " AND ".join(f"{quote(k)} = %s" for k in key)
    for source, target in ((ephys.Unit, ephys.ArchivedClustering.Unit),
                           (ephys.ClusterMetric, ephys.ArchivedClustering.ClusterMetric),
                           (ephys.WaveformMetric, ephys.ArchivedClustering.WaveformMetric)):
        columns = [c for c in target.heading.names if c != "archive"]
        names = ", ".join(quote(c) for c in columns)
        cursor.execute(f"INSERT INTO {target.full_table_name} ({names}, {quote('archive')}) "
                       f"SELECT {names}, %s FROM {source.full_table_name} WHERE {where}", [number, *key.values()])
    # A cascading delete, inside the make's transaction: whatever was computed from these units
    # (histology.UnitCCF, analysis results) goes with them and is computed again for the new sorting.
    (ephys.Clustering & key).delete(transaction=False, prompt=False)
    return number


# --- the ingest table --------------------------------------------------------------------------

@schema
class EphysIngest(dj.Imported):
    definition = """
    # a CatGT run loaded: its probes, trials and sortings
    -> EphysRunFolder
    ---
    -> experiment.Session
    """

    class EphysFile(dj.Part):
        definition = """
        # every file of the run folder when it was loaded (to notice a newer sorting)
        -> master
        file_hash : char(32)             # MD5 of relpath
        ---
        relpath : varchar(1024)          # relative to the share root
        file_size : int64
        file_mtime : float64
        """

    @property
    def key_source(self):
        return registered_runs().proj()

    def make(self, key: dict) -> None:
        run = (EphysRunFolder * share.ShareRoot & key).to_dicts()[0]
        root, folder = Path(run["root_path"]), run["folder"]
        metas = sorted((EphysProbeMeta * share.ShareFile & key).to_dicts(), key=lambda m: m["imec"])
        files = _run_files(run["root_hash"], folder)
        names = [rel for rel, _, _ in files]
        # read and check everything before the first write
        session_key = match_session(key["water_restriction_number"], metas, root)
        probes = read_probes(root, run["root_hash"], metas, names)
        trials = read_trials(root, folder, names, session_key, probes[0].recording.duration_s)
        replace = bool(EphysReplace & key)
        insertions = [{**session_key, "insertion_number": p.recording.probe_number} for p in probes]
        current = (ephys.Clustering & insertions).keys() if insertions else []
        if current and not replace:
            shown = ", ".join(f"probe {c['insertion_number']} {c['clustering_method']}" for c in current)
            raise dj.DataJointError(f"{root / folder}: session {session_key} already has clusterings ({shown}); "
                                    "run mapshell ingest-ephys --replace to archive them and load the new files")
        for ckey in current:
            archive_clustering(ckey)
        if replace:
            (ephys.TrialEvent & session_key).delete_quick()
            (EphysReplace & key).delete_quick()
        self.insert_trial_events(session_key, trials)
        for probe, insertion in zip(probes, insertions):
            config = self.ensure_insertion(insertion, probe, root)
            for method, relpath, output in probe.sortings:
                newest = max((m for rel, _, m in files if rel == relpath or rel.startswith(relpath + "/")), default=0.0)
                load_clustering(session_key, insertion, config, probe, method, relpath, output, trials, newest)
        self.insert1({**key, **session_key})
        self.EphysFile.insert([{**key, "file_hash": share.path_hash(rel), "relpath": rel, "file_size": size,
                                "file_mtime": mtime} for rel, size, mtime in files])

    @staticmethod
    def ensure_insertion(insertion: dict, probe: ProbeData, root: Path) -> dict:
        recording = probe.recording
        path = root / probe.meta_relpath
        ensure_probe(recording, path)
        config = ensure_electrode_config(recording)
        existing = (ephys.ProbeInsertion & insertion).to_dicts()
        if existing:
            had = existing[0]
            if (had["probe"], had["probe_type"], had["electrode_config_name"]) != \
                    (recording.probe_serial, config["probe_type"], config["electrode_config_name"]):
                raise ReaderError(path, f"probe {insertion['insertion_number']} of session {insertion['session']} was "
                                        f"loaded as probe {had['probe']} ({had['electrode_config_name']}); the meta now "
                                        "says otherwise: delete the insertion to load it anew")
            return config
        ephys.ProbeInsertion.insert1({**insertion, "probe": recording.probe_serial, **config}, allow_direct_insert=True)
        ephys.ProbeInsertion.RecordingSystemSetup.insert1({**insertion, "sampling_rate": recording.sample_rate},
                                                          allow_direct_insert=True)
        return config

    @staticmethod
    def insert_trial_events(session_key: dict, trials: EphysTrials) -> None:
        """ephys.TrialEvent: the sync edge (bitcodestart) and every behaviour event, on the recording clock."""
        events = (experiment.TrialEvent & session_key).to_arrays("trial", "trial_event_id", "trial_event_type",
                                                                 "trial_event_time")
        by_trial: dict[int, list] = {}
        for t, i, kind, when in zip(*events):
            by_trial.setdefault(int(t), []).append((int(i), kind, float(when)))
        rows = []
        for index, trial in sorted(trials.trial_of.items()):
            start = float(trials.starts[index])
            tkey = {**session_key, "trial": trial}
            rows.append({**tkey, "trial_event_id": 0, "trial_event_type": "bitcodestart",
                         "trial_event_time": round(start, 6)})
            rows += [{**tkey, "trial_event_id": i + 1, "trial_event_type": kind, "trial_event_time": round(start + when, 6)}
                     for i, kind, when in by_trial.get(trial, [])]
        ephys.TrialEvent.insert(rows, allow_direct_insert=True)


# --- re-sorting ---------------------------------------------------------------------------------

def changed_runs(restriction=None) -> list[dict]:
    """Loaded runs whose files on the share differ from those loaded (a newer sorting, re-curation)."""
    loaded = (EphysIngest * EphysRunFolder).proj("root_hash", "folder", "subject_id", "session")
    if restriction is not None:
        loaded = loaded & restriction
    out = []
    for run in loaded.to_dicts():
        key = {"water_restriction_number": run["water_restriction_number"], "ephys_run": run["ephys_run"]}
        recorded = (EphysIngest.EphysFile & key).to_arrays("relpath", "file_size", "file_mtime")
        then = {r: (int(s), float(m)) for r, s, m in zip(*recorded)}
        now = {r: (s, m) for r, s, m in _run_files(run["root_hash"], run["folder"])}
        if then != now:
            changed = sorted(r for r in set(then) | set(now) if then.get(r) != now.get(r))
            out.append({**key, "subject_id": run["subject_id"], "session": run["session"], "changed": changed})
    return out


def request_replace(restriction=None) -> list[str]:
    """Mark changed loaded runs for reloading: the next EphysIngest populate archives their current
    clusterings (ephys.ArchivedClustering) and loads what is on disk, in one transaction."""
    from pipeline.jobs import clear_errors

    lines = []
    for run in changed_runs(restriction):
        key = {"water_restriction_number": run["water_restriction_number"], "ephys_run": run["ephys_run"]}
        with EphysIngest.connection.transaction:
            EphysReplace.insert1({**key, "requested": dt.datetime.now().replace(microsecond=0)}, skip_duplicates=True)
            (EphysIngest.EphysFile & key).delete_quick()
            (EphysIngest & key).delete_quick()
        clear_errors(EphysIngest, key)
        lines.append(f"replace: {run['ephys_run']} (subject {run['subject_id']}, session {run['session']}): "
                     f"{len(run['changed'])} file(s) changed since it was loaded; its clusterings will be archived")
    return lines


def ingest_report() -> list[str]:
    """Extra summary lines of ingest-ephys: newer files of loaded runs, unregistered h2os."""
    lines = [f"newer files: {run['ephys_run']} (subject {run['subject_id']}, session {run['session']}) changed on the "
             f"share since it was loaded ({len(run['changed'])} file(s), e.g. {run['changed'][0]}); "
             "mapshell ingest-ephys --replace archives the loaded clusterings and loads the new ones"
             for run in changed_runs()]
    unregistered = EphysRunFolder().restrict(dj.Not(lab.WaterRestriction.proj("water_restriction_number")),
                                             semantic_check=False)
    counts: dict[str, int] = {}
    for h2o in unregistered.to_arrays("water_restriction_number"):
        counts[h2o] = counts.get(h2o, 0) + 1
    lines += [f"not ingested: {n} ephys run(s) of water-restriction number {h2o}, which is not registered"
              for h2o, n in sorted(counts.items())]
    return lines



"""Kilosort 2 output in phy format, as written beside the CatGT output (`imec<N>_ks2/`).

Cluster ids equal template indices. Curated sessions carry a `cluster_group.tsv` that differs
from `cluster_KSLabel.tsv` for some units plus a `phy.log`; uncurated ones have
cluster_group.tsv == KSLabel (what Kilosort 2.5 writes before anyone opens phy).
`mean_waveforms.npy` is (n_clusters, n_channels, 82) in uV (ecephys_spike_sorting layout);
`amplitudes.npy` is the per-spike template amplitude in bits (x uV/bit gives uV)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from .model import SAMPLE_RATE, Probe, Session
from .spikeglx import bin_path, channel_positions, probe_dir, spatial_weights, waveform_shape

METRIC_COLUMNS = ("cluster_id", "firing_rate", "presence_ratio", "isi_viol", "amplitude_cutoff",
                  "isolation_distance", "l_ratio", "d_prime", "nn_hit_rate", "nn_miss_rate",
                  "silhouette_score", "max_drift", "cumulative_drift", "peak_channel", "snr",
                  "duration", "halfwidth", "PT_ratio", "repolarization_slope", "recovery_slope",
                  "amplitude", "spread", "velocity_above", "velocity_below",
                  "epoch_name_quality_metrics", "epoch_name_waveform_metrics")


def ks_dir(root: Path, s: Session, p: Probe) -> Path:
    return probe_dir(root, s, p) / f"imec{p.imec}_ks2"


def _tsv(path: Path, col: str, ids, values, fmt: str = "{}") -> None:
    path.write_text(f"cluster_id\t{col}\n" + "".join(
        f"{i}\t{fmt.format(v)}\n" for i, v in zip(ids, values)))


def isi_violation_rate(st: np.ndarray, duration: float, ref: float = 0.0015,
                       min_isi: float = 0.0) -> float:
    """Hill et al. false-positive rate estimate, as in the Allen metrics."""
    n = len(st)
    if n < 2:
        return 0.0
    isis = np.diff(st) / SAMPLE_RATE
    nv = int(np.sum(isis < ref))
    return float(nv * duration / (2 * (ref - min_isi) * n * n))


def write_kilosort(root: Path, s: Session, p: Probe, spikes: list, rng: np.random.Generator,
                   stream: bool = False) -> Path:
    """Write the phy folder for one probe. spikes: per-unit sorted sample arrays."""
    d = ks_dir(root, s, p)
    d.mkdir(parents=True, exist_ok=True)
    nch = p.n_saved - 1
    pos = channel_positions(p)
    shape = waveform_shape(82)
    ids = np.array([u.cluster_id for u in p.units])
    counts = np.array([len(x) for x in spikes])
    total = int(counts.sum())
    times = np.concatenate(spikes) if total else np.zeros(0, np.int64)
    clus = np.repeat(ids.astype(np.int32), counts)
    order = np.argsort(times, kind="stable")
    times = times[order].astype(np.int64)
    clus = clus[order]
    del order
    np.save(d / "spike_times.npy", times)
    np.save(d / "spike_clusters.npy", clus)
    np.save(d / "spike_templates.npy", clus.astype(np.uint32))
    amp_unit = np.array([u.amplitude_uv / p.uv_per_bit for u in p.units])
    amps = amp_unit[clus] * (1.0 + 0.1 * rng.standard_normal(total))
    np.save(d / "amplitudes.npy", amps.astype(np.float64))
    del amps, times, clus
    templates = np.zeros((len(p.units), 82, nch), np.float32)
    mean_wf = np.zeros((len(p.units), nch, 82), np.float32)
    for k, u in enumerate(p.units):
        w = spatial_weights(pos, u.peak_channel)
        templates[k] = (shape[:, None] * w[None, :] * 20.0).astype(np.float32)
        mean_wf[k] = (u.amplitude_uv * w[:, None] * shape[None, :]).astype(np.float32)
    np.save(d / "templates.npy", templates)
    np.save(d / "templates_ind.npy", np.tile(np.arange(nch, dtype=np.float64), (len(p.units), 1)))
    np.save(d / "mean_waveforms.npy", mean_wf)
    np.save(d / "channel_map.npy", np.arange(nch, dtype=np.int32))
    np.save(d / "channel_positions.npy", pos.astype(np.float64))
    np.save(d / "whitening_mat_inv.npy", np.eye(nch) * 0.05)
    np.save(d / "similar_templates.npy", np.eye(len(p.units), dtype=np.float32))
    (d / "params.py").write_text(
        f"dat_path = '../{bin_path(root, s, p).name}'\n"
        f"n_channels_dat = {p.n_saved}\n"
        "dtype = 'int16'\n"
        "offset = 0\n"
        f"sample_rate = {float(SAMPLE_RATE)}\n"
        "hp_filtered = False\n")
    _tsv(d / "cluster_KSLabel.tsv", "KSLabel", ids, [u.ks_label for u in p.units])
    _tsv(d / "cluster_group.tsv", "group", ids, [u.group for u in p.units])
    contam = [round(float(rng.uniform(0, 8) if u.ks_label == "good" else rng.uniform(10, 60)), 1)
              for u in p.units]
    _tsv(d / "cluster_ContamPct.tsv", "ContamPct", ids, contam)
    _tsv(d / "cluster_Amplitude.tsv", "Amplitude", ids, [round(a, 1) for a in amp_unit])
    dur = s.ephys.duration
    rows = []
    for u, st in zip(p.units, spikes):
        good = u.group == "good"
        rows.append([
            u.cluster_id, len(st) / dur, round(float(rng.uniform(0.9, 1.0) if good else rng.uniform(0.5, 1.0)), 2),
            isi_violation_rate(st, dur), float(rng.uniform(0, 0.1)),
            float(rng.uniform(30, 120)), float(rng.uniform(0, 0.1)), float(rng.uniform(2, 6)),
            float(rng.uniform(0.8, 1.0)), float(rng.uniform(0, 0.05)), float(rng.uniform(0, 0.3)),
            float(rng.uniform(0, 30)), float(rng.uniform(0, 80)), u.peak_channel,
            float(rng.uniform(2, 8)), float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.1, 0.3)),
            float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.3, 0.9)), float(rng.uniform(-0.2, 0)),
            u.amplitude_uv, float(rng.uniform(20, 80)), 0.0, 0.0, "complete_session",
            "complete_session"])
    lines = ["," + ",".join(METRIC_COLUMNS)]
    for i, r in enumerate(rows):
        lines.append(f"{i}," + ",".join(
            v if isinstance(v, str) else (str(v) if isinstance(v, (int, np.integer)) else f"{v:.6g}")
            for v in r))
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    if p.curated:
        t0 = s.start + dt.timedelta(days=3, hours=2)
        changed = [u for u in p.units if u.group != u.ks_label]
        log = [f"{t0:%H:%M:%S}.000 [I] state:87          Load phy {s.ephys.run} imec{p.imec}"]
        for i, u in enumerate(changed):
            log.append(f"{t0 + dt.timedelta(minutes=i + 1):%H:%M:%S}.{i:03d} [I] "
                       f"cluster_view:120   Label `group` of cluster {u.cluster_id} to `{u.group}`.")
        log.append(f"{t0 + dt.timedelta(minutes=30):%H:%M:%S}.000 [I] supervisor:694     Saved.")
        (d / "phy.log").write_text("\n".join(log) + "\n")
    return d

"""The one shape every spike-sorter reader returns, so ingest has a single code path.

Kilosort (phy folder) and JRCLUST (.mat) differ in file layout, numbering and vocabulary; the
readers translate both into :class:`SortingOutput`: 0-based int64 sample indices, phy's quality
words (``good`` / ``mua`` / ``noise``, ``unsorted`` when nobody labelled the cluster), and
channel indices into the sorter's own channel list (``channel_positions`` rows), which for a
SpikeGLX recording is the position of the channel among the saved AP channels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QUALITIES = ("good", "mua", "noise", "unsorted")
UNSORTED = "unsorted"


@dataclass
class SortingOutput:
    """Spike-sorting result of one probe.

    Per-spike arrays may be read-only memory maps (Kilosort), so millions of spikes cost no
    RAM until used. Per-unit arrays (``cluster_ids``, ``peak_channels``, ``unit_positions``,
    ``spike_counts``) are aligned with each other and sorted by cluster id."""

    path: Path                      # Kilosort folder or JRCLUST .mat file
    sorter: str                     # 'kilosort' | 'jrclust_v4'
    sample_rate: float | None       # Hz, as the sorter recorded it (params.py / .prm)
    spike_times: np.ndarray         # (n,) int64, 0-based sample index in the sorted .bin
    spike_clusters: np.ndarray      # (n,) integer cluster id per spike (units only)
    amplitudes: np.ndarray          # (n,) per-spike amplitude in bits (x uv_per_bit -> uV)
    cluster_ids: np.ndarray         # (k,) int64 unit ids, ascending (sorter's own numbering)
    spike_counts: np.ndarray        # (k,) int64 spikes per unit
    quality: dict[int, str]         # cluster id -> good | mua | noise | unsorted
    curated: bool                   # a human labelled clusters (phy.log / JRCLUST notes)
    peak_channels: np.ndarray       # (k,) int64 row of channel_positions with the largest wave
    unit_positions: np.ndarray      # (k, 2) float x, y (um) of the peak channel
    channel_map: np.ndarray         # (n_ch,) int64 channel of the raw file per sorter channel
    channel_positions: np.ndarray   # (n_ch, 2) float x, y (um)
    params: dict = field(default_factory=dict)         # params.py / .prm values
    metrics: dict[int, dict] = field(default_factory=dict)  # cluster id -> metric name -> value
    mean_waveforms: dict[int, np.ndarray] = field(default_factory=dict)  # id -> (n_ch, nt) uV
    templates: np.ndarray | None = None        # Kilosort (n_templates, nt, n_ch)
    spike_templates: np.ndarray | None = None  # Kilosort (n,) template per spike
    ks_labels: dict[int, str] = field(default_factory=dict)  # Kilosort's own label
    groups: dict[int, str] = field(default_factory=dict)     # cluster_group.tsv / notes

    @property
    def n_spikes(self) -> int:
        return int(self.spike_times.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.cluster_ids.shape[0])

    def unit_index(self, cluster_id: int) -> int:
        """Row of a cluster in the per-unit arrays (KeyError if it is not a unit)."""
        i = int(np.searchsorted(self.cluster_ids, cluster_id))
        if i >= len(self.cluster_ids) or self.cluster_ids[i] != cluster_id:
            raise KeyError(cluster_id)
        return i

    def unit_spike_times(self) -> Iterator[tuple[int, np.ndarray]]:
        """(cluster id, sorted spike samples) per unit, with one stable sort of all spikes:
        selecting each unit with a boolean mask would cost units x spikes at Neuropixels
        scale (400 x 20 M)."""
        order = np.argsort(self.spike_clusters, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(self.spike_counts)])
        for i, cid in enumerate(self.cluster_ids):
            yield int(cid), np.asarray(self.spike_times[order[bounds[i]:bounds[i + 1]]])


def count_clusters(spike_clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids, spike counts) in O(n) with bincount (no sort of the spikes)."""
    if spike_clusters.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    counts = np.bincount(np.asarray(spike_clusters))  # cluster ids are >= 0 (validated)
    ids = np.flatnonzero(counts)
    return ids.astype(np.int64), counts[ids].astype(np.int64)

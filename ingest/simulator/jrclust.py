"""JRCLUST v4 output: `<run>_g0_tcat.imec<N>.ap_res.mat` (MATLAB v7.3 / HDF5) and `.prm`.

Fields written (MATLAB shapes; h5py shows them transposed, e.g. spikeTimes as (1, nSpikes)):
  spikeTimes     int32  (nSpikes, 1)  1-based sample index (MATLAB), sample0 = spikeTimes - 1
  spikeSites     int32  (nSpikes, 1)  1-based site (index into siteMap = saved AP channels)
  spikeClusters  int32  (nSpikes, 1)  1-based cluster; 0 = unassigned (not a unit)
  spikeAmps      int16  (nSpikes, 1)  peak amplitude, bits
  spikePositions single (nSpikes, 2)  x, y (um)
  clusterSites   double (nClusters, 1) 1-based peak site
  clusterCentroids double (nClusters, 2)
  clusterNotes   cell   (nClusters, 1) 'single' (-> good) | 'multi' (-> mua) | 'noise'
  unitCount      double (nClusters, 1) spikes per cluster
  unitVpp, unitSNR, unitISIRatio, unitIsoDist, unitLRatio  double (nClusters, 1)
  meanWfGlobal   single (nSamples=41, nSites, nClusters) uV
  siteRMS        single (nSites, 1)
The sampling rate lives in the `.prm` file (`sampleRate = 30000;`), as in JRCLUST."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from .matfile import V73Writer
from .model import SAMPLE_RATE, Probe, Session
from .spikeglx import bin_path, channel_positions, probe_dir, spatial_weights, waveform_shape

NOTE_OF_GROUP = {"good": "single", "mua": "multi", "noise": "noise"}


def res_path(root: Path, s: Session, p: Probe) -> Path:
    return probe_dir(root, s, p) / f"{s.ephys.run}_g0_tcat.imec{p.imec}.ap_res.mat"


def write_jrclust(root: Path, s: Session, p: Probe, spikes: list, rng: np.random.Generator,
                  n_unassigned: int = 25) -> Path:
    """Write the res.mat and prm for one probe; n_unassigned extra spikes get cluster 0."""
    pos = channel_positions(p)
    nsites = len(pos)
    counts = np.array([len(x) for x in spikes])
    times = np.concatenate(spikes)
    clus = np.repeat(np.arange(1, len(p.units) + 1, dtype=np.int32), counts)
    sites = np.repeat(np.array([u.peak_channel + 1 for u in p.units], np.int32), counts)
    garbage = np.sort(rng.choice(s.ephys.n_samples - 100, n_unassigned, replace=False)) + 50
    times = np.concatenate([times, garbage])
    clus = np.concatenate([clus, np.zeros(n_unassigned, np.int32)])
    sites = np.concatenate([sites, rng.integers(1, nsites + 1, n_unassigned).astype(np.int32)])
    order = np.argsort(times, kind="stable")
    times, clus, sites = times[order], clus[order], sites[order]
    amps = np.array([0] + [u.amplitude_uv / p.uv_per_bit for u in p.units])[clus]
    amps = (amps * (1 + 0.1 * rng.standard_normal(len(amps))) + 5).astype(np.int16)
    shape = waveform_shape(41)
    wf = np.zeros((41, nsites, len(p.units)), np.float32)
    for k, u in enumerate(p.units):
        wf[:, :, k] = (u.amplitude_uv * shape[:, None] * spatial_weights(pos, u.peak_channel)[None, :])
    path = res_path(root, s, p)
    w = V73Writer(path, s.start + dt.timedelta(days=2))
    w.put("spikeTimes", (times + 1).astype(np.int32))
    w.put("spikeSites", sites)
    w.put("spikeClusters", clus)
    w.put("spikeAmps", amps)
    w.put("spikePositions", pos[sites - 1].astype(np.float32))
    w.put("clusterSites", np.array([u.peak_channel + 1 for u in p.units], float))
    w.put("clusterCentroids", pos[[u.peak_channel for u in p.units]].astype(float))
    w.put("clusterNotes", [NOTE_OF_GROUP[u.group] for u in p.units])
    w.put("unitCount", counts.astype(float))
    w.put("unitVpp", np.array([2 * u.amplitude_uv for u in p.units], float))
    w.put("unitSNR", rng.uniform(3, 12, len(p.units)))
    w.put("unitISIRatio", rng.uniform(0, 0.05, len(p.units)))
    w.put("unitIsoDist", rng.uniform(15, 80, len(p.units)))
    w.put("unitLRatio", rng.uniform(0, 0.2, len(p.units)))
    w.put("meanWfGlobal", wf)
    w.put("siteRMS", np.full(nsites, 6.0, np.float32))
    w.close()
    prm = path.with_name(path.name.replace("_res.mat", ".prm"))
    site_loc = "; ".join(f"{x:g}, {y:g}" for x, y in pos)
    prm.write_text(
        "% JRCLUST parameters (v4)\n"
        f"rawRecordings = {{'{bin_path(root, s, p).name}'}};\n"
        f"sampleRate = {SAMPLE_RATE};\n"
        f"nChans = {p.n_saved};\n"
        f"siteMap = [{' '.join(str(i + 1) for i in range(nsites))}];\n"
        f"siteLoc = [{site_loc}];\n"
        f"shankMap = [{' '.join('1' for _ in range(nsites))}];\n"
        f"bitScaling = {p.uv_per_bit};\n"
        "headerOffset = 0;\n"
        "dataType = 'int16';\n")
    return path

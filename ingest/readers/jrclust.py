"""JRCLUST v4 `*_res.mat` (+ its `.prm`) -> :class:`SortingOutput`.

Why two MATLAB paths: JRCLUST saves with MATLAB's default, which is v7.3 (HDF5, read with
h5py; arrays appear transposed) for anything over 2 GB and v5 (scipy.io.loadmat) otherwise.

Translations to the common shape:
- spikeTimes are 1-based MATLAB samples -> 0-based (``spikeTimes - 1``).
- spikeClusters 0 means "not assigned to any cluster": those spikes are dropped. Cluster ids
  stay JRCLUST's own 1-based numbers (what the user saw in the JRCLUST GUI).
- clusterSites (1-based site) -> peak channel = site - 1, an index into siteMap/siteLoc, i.e.
  a row of ``channel_positions`` (for a CatGT recording: the saved AP channel).
- clusterNotes -> quality: ``single`` -> ``good``, ``multi`` -> ``mua``, ``noise`` ->
  ``noise`` (phy's words, so Kilosort and JRCLUST units share one vocabulary); an empty note
  -> ``unsorted``; any other note is kept lower-cased. ``curated`` = some cluster has a note.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import ReaderError
from .sorting import UNSORTED, SortingOutput, count_clusters

NOTE_QUALITY = {"single": "good", "multi": "mua", "noise": "noise"}


# ----------------------------------------------------------------------------- .mat access
def _h5_string(f, ds) -> str:
    if ds.attrs.get("MATLAB_empty", 0):
        return ""
    return "".join(chr(c) for c in np.asarray(ds[()]).ravel())


def _read_v73(path: Path) -> dict:
    """Needed variables from a v7.3 file, back in MATLAB orientation (h5py shows them
    transposed); cell arrays of strings become lists."""
    import h5py

    out: dict = {}
    with h5py.File(path, "r") as f:
        for name in f:
            if name.startswith("#"):
                continue
            ds = f[name]
            if not isinstance(ds, h5py.Dataset):
                continue
            cls = ds.attrs.get("MATLAB_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            if cls == "cell":
                out[name] = [_h5_string(f, f[r]) if isinstance(f[r], h5py.Dataset) else ""
                             for r in np.asarray(ds[()]).T.ravel()]
            elif cls == "char":
                out[name] = _h5_string(f, ds)
            elif ds.attrs.get("MATLAB_empty", 0):
                out[name] = np.zeros((0, 0))
            else:
                out[name] = np.asarray(ds[()]).T
    return out


def _read_v5(path: Path) -> dict:
    import scipy.io

    raw = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    out: dict = {}
    for name, value in raw.items():
        if name.startswith("__"):
            continue
        if isinstance(value, np.ndarray) and value.dtype == object:  # cell array
            out[name] = [_cell_text(v) for v in value.T.ravel()]
        elif isinstance(value, np.ndarray) and value.dtype.kind == "U":
            out[name] = "".join(value.ravel())
        else:
            out[name] = value
    return out


def _cell_text(v) -> str:
    arr = np.asarray(v)
    if arr.size == 0:
        return ""
    if arr.dtype.kind == "U":
        return "".join(arr.ravel())
    return str(arr.ravel()[0])


def read_mat(path: Path | str) -> dict:
    """Any MATLAB .mat (v5 or v7.3) -> {variable: ndarray | str | list[str]}."""
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "file does not exist")
    try:
        import h5py

        if h5py.is_hdf5(path):
            return _read_v73(path)
        return _read_v5(path)
    except ReaderError:
        raise
    except Exception as e:  # truncated / not a MAT-file: scipy and h5py raise many types
        raise ReaderError(path, f"not a readable MATLAB file: {type(e).__name__}: {e}") from None


def _vector(path: Path, data: dict, name: str, kind: str, n: int | None = None) -> np.ndarray:
    if name not in data:
        raise ReaderError(path, f"no variable {name}")
    arr = np.asarray(data[name])
    if arr.ndim > 2 or (arr.ndim == 2 and min(arr.shape) > 1):
        raise ReaderError(path, f"{name}: wrong shape: expected a vector, found {arr.shape}")
    if arr.dtype.kind not in kind:
        raise ReaderError(path, f"{name}: wrong dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ReaderError(path, f"{name} has {arr.shape[0]} entries, expected {n} "
                                f"(spike arrays of unequal length)")
    return arr


# ----------------------------------------------------------------------------- .prm
def read_prm(path: Path) -> dict:
    """`name = value;` lines of a JRCLUST .prm: numbers, [row; row] matrices, 'strings' and
    {'cell', 'strings'}; anything else is kept as its source text. MATLAB is not run."""
    params: dict = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ReaderError(path, f"cannot read: {e}") from None
    for line in text.splitlines():
        line = line.split("%", 1)[0].strip()
        m = re.match(r"^(\w+)\s*=\s*(.*?);?\s*$", line)
        if m:
            params[m.group(1)] = _matlab_value(m.group(2))
    return params


def _matlab_value(src: str):
    src = src.strip()
    if src.startswith("{") and src.endswith("}"):
        return re.findall(r"'([^']*)'", src)
    if src.startswith("'") and src.endswith("'"):
        return src[1:-1]
    if src.startswith("[") and src.endswith("]"):
        rows = [r for r in src[1:-1].split(";") if r.strip()]
        try:
            mat = [[float(x) for x in re.split(r"[,\s]+", r.strip()) if x] for r in rows]
            return np.array(mat[0] if len(mat) == 1 else mat, float)
        except ValueError:
            return src
    try:
        return float(src) if re.search(r"[.eE]", src) else int(src)
    except ValueError:
        return {"true": True, "false": False}.get(src, src)


# ----------------------------------------------------------------------------- reader
def read_jrclust_v4(path: Path | str, n_samples: int | None = None) -> SortingOutput:
    """Read a JRCLUST v4 `*_res.mat`; the `.prm` beside it (same stem, `_res.mat` ->
    `.prm`) supplies the sample rate and site positions when present."""
    path = Path(path)
    data = read_mat(path)
    times = _vector(path, data, "spikeTimes", "iuf")
    n = times.shape[0]
    clusters = _vector(path, data, "spikeClusters", "iuf", n)
    amps = _vector(path, data, "spikeAmps", "iuf", n) if "spikeAmps" in data \
        else np.zeros(n, np.float32)
    if times.dtype.kind == "f" and np.any(times != np.round(times)):
        raise ReaderError(path, "spikeTimes are not whole sample numbers")
    if clusters.dtype.kind == "f" and np.any(clusters != np.round(clusters)):
        raise ReaderError(path, "spikeClusters are not whole cluster numbers")
    keep = clusters > 0           # 0 = unassigned; negative = JRCLUST's deleted/noise spikes
    times = times[keep].astype(np.int64) - 1
    clusters = clusters[keep].astype(np.int64)
    amps = amps[keep]
    if times.size:
        if int(times.min()) < 0:
            raise ReaderError(path, "spikeTimes has a sample before 1 (MATLAB is 1-based)")
        if n_samples is not None and int(times.max()) >= n_samples:
            raise ReaderError(path, f"spikeTimes: last spike at sample {int(times.max())} is "
                                    f"past the end of the recording (n_samples={n_samples})")
    cluster_ids, counts = count_clusters(clusters)

    sites = _vector(path, data, "clusterSites", "iuf")
    notes = data.get("clusterNotes", [""] * len(sites))
    if isinstance(notes, str):
        notes = [notes]
    n_clu = len(sites)
    if len(notes) != n_clu:
        raise ReaderError(path, f"clusterNotes has {len(notes)} entries, clusterSites {n_clu}")
    if cluster_ids.size and cluster_ids[-1] > n_clu:
        raise ReaderError(path, f"spikeClusters has cluster {cluster_ids[-1]} but only "
                                f"{n_clu} clusters are described (clusterSites)")
    groups = {i + 1: str(t).strip().lower() for i, t in enumerate(notes) if str(t).strip()}
    quality = {int(c): NOTE_QUALITY.get(groups.get(int(c), ""), groups.get(int(c)) or UNSORTED)
               for c in cluster_ids}
    peaks = sites[cluster_ids - 1].astype(np.int64) - 1

    prm_path = path.with_name(re.sub(r"_res\.mat$", ".prm", path.name))
    params = read_prm(prm_path) if prm_path.exists() and prm_path != path else {}
    n_sites = (int(np.asarray(data.get("siteRMS", np.zeros(0))).size)
               or int(peaks.max(initial=-1) + 1))
    site_loc = params.get("siteLoc")
    if isinstance(site_loc, np.ndarray) and site_loc.ndim == 2 and site_loc.shape[1] == 2:
        positions = site_loc.astype(float)
    elif "clusterCentroids" in data:   # without the .prm: each unit's own centroid only
        positions = np.full((max(n_sites, 0), 2), np.nan)
        cent = np.asarray(data["clusterCentroids"], float).reshape(n_clu, 2)
        positions[peaks] = cent[cluster_ids - 1]
    else:
        positions = np.full((max(n_sites, 0), 2), np.nan)
    if peaks.size and peaks.max() >= len(positions):
        raise ReaderError(path, f"clusterSites refers to site {int(peaks.max()) + 1} but only "
                                f"{len(positions)} sites are known")
    site_map = params.get("siteMap")
    channel_map = (np.atleast_1d(site_map).astype(np.int64) - 1
                   if isinstance(site_map, np.ndarray) else np.arange(len(positions)))

    metrics: dict[int, dict] = {}
    for field in ("unitCount", "unitVpp", "unitSNR", "unitISIRatio", "unitIsoDist", "unitLRatio"):
        if field in data:
            vals = np.asarray(data[field], float).reshape(-1)
            if vals.size == n_clu:
                for c in cluster_ids:
                    metrics.setdefault(int(c), {})[field] = float(vals[c - 1])
    mean_waveforms: dict[int, np.ndarray] = {}
    wf = data.get("meanWfGlobal")
    if isinstance(wf, np.ndarray) and wf.ndim == 3 and wf.shape[2] == n_clu:
        mean_waveforms = {int(c): np.ascontiguousarray(wf[:, :, c - 1].T) for c in cluster_ids}
    rate = params.get("sampleRate")

    return SortingOutput(
        path=path, sorter="jrclust_v4", sample_rate=float(rate) if rate else None,
        spike_times=times, spike_clusters=clusters, amplitudes=amps, cluster_ids=cluster_ids,
        spike_counts=counts, quality=quality, curated=bool(groups), peak_channels=peaks,
        unit_positions=positions[peaks], channel_map=channel_map, channel_positions=positions,
        params=params, metrics=metrics, mean_waveforms=mean_waveforms, groups=groups)

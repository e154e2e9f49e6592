"""Kilosort 2/2.5/3/4 output in phy format -> :class:`SortingOutput`.

Why so much checking: a phy folder is a loose set of .npy/.tsv files that people edit by hand
and tools rewrite, and a wrong-shaped or wrong-typed array would otherwise become wrong
spikes in the database. Every array is opened with ``mmap_mode='r'`` (only the header is read
until the data is used), checked for shape and dtype, and the spike arrays are returned as
views of those maps: at ~20 M spikes nothing is copied unless the dtype must change.
"""

from __future__ import annotations

import ast
import csv
import errno
import os
from pathlib import Path

import numpy as np

from .errors import ReaderError
from .sorting import UNSORTED, SortingOutput, count_clusters

INTEGER = "iu"
REAL = "fiu"
FLOAT = "f"
_KINDS = {INTEGER: "an integer", REAL: "a real number", FLOAT: "a floating-point"}


# ----------------------------------------------------------------------------- npy
def load_npy(path: Path, required: bool = True) -> np.ndarray | None:
    """Memory-mapped .npy (plain load when mapping is impossible, e.g. object arrays)."""
    if not path.exists():
        if required:
            raise ReaderError(path, "file does not exist")
        return None
    try:
        return np.load(path, mmap_mode="r")
    except ValueError as e:
        if "allow_pickle" in str(e) or "object" in str(e):
            raise ReaderError(path, "holds Python objects (dtype=object), not numbers") from None
        raise ReaderError(path, f"not a readable .npy file: {e}") from None
    except OSError as e:
        raise ReaderError(path, f"cannot read: {e.strerror or e}") from None


def check_array(path: Path, arr: np.ndarray, shapes: list[tuple], kinds: str,
                names: str) -> np.ndarray:
    """Check ndim/extent against alternatives like [('n',), ('n', 1)] (a str = any extent,
    the same str must agree across calls through ``names`` bindings) and dtype kind."""
    if arr.dtype.kind not in kinds:
        raise ReaderError(path, f"wrong dtype: expected {_KINDS[kinds]} dtype, found {arr.dtype}")
    for shape in shapes:
        if len(shape) == arr.ndim and all(isinstance(s, str) or s == a
                                          for s, a in zip(shape, arr.shape)):
            return arr
    want = " or ".join("(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")"
                       for s in shapes)
    raise ReaderError(path, f"wrong shape: expected {want} ({names}), found {arr.shape}")


def vector(path: Path, arr: np.ndarray, kinds: str, what: str) -> np.ndarray:
    """A (n,) or (n, 1) array as a (n,) view (Kilosort 2 writes column vectors)."""
    arr = check_array(path, arr, [("n",), ("n", 1)], kinds, what)
    return arr.reshape(-1)


def as_int64(arr: np.ndarray) -> np.ndarray:
    """int64 view when possible (uint64 sample indices reinterpret losslessly below 2**63;
    negative results are caught by the range check), else a converted copy."""
    if arr.dtype == np.int64:
        return arr
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------- text files
def read_params(path: Path) -> dict:
    """params.py without executing it: each `name = literal` via ast.literal_eval; a line
    that is not a literal assignment is an error (it would have run code in phy)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:
        raise ReaderError(path, f"not valid Python: {e.msg} (line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReaderError(path, f"cannot read: {e}") from None
    params: dict = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ReaderError(path, f"line {node.lineno} is not a simple `name = value`")
        name = node.targets[0].id
        try:
            params[name] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError):
            raise ReaderError(path, f"{name} (line {node.lineno}) is not a literal value") from None
    return params


def read_cluster_tsv(path: Path) -> dict[int, str]:
    """`cluster_id<TAB>label` rows (any label column name) -> {id: lower-case label}."""
    if not path.exists():
        return {}
    out: dict[int, str] = {}
    with open(path, newline="") as fh:
        rows = csv.reader(fh, delimiter="\t")
        header = next(rows, None)
        if not header or header[0].strip() != "cluster_id" or len(header) < 2:
            raise ReaderError(path, f"header should be cluster_id<TAB><label>, found {header}")
        for n, row in enumerate(rows, 2):
            if not row:
                continue
            try:
                cid = int(row[0])
            except (ValueError, IndexError):
                raise ReaderError(path, f"line {n}: cluster_id {row[:1]} is not an integer"
                                  ) from None
            label = row[1].strip().lower() if len(row) > 1 else ""
            if label:
                out[cid] = label
    return out


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_metrics(path: Path) -> dict[int, dict]:
    """metrics.csv (Allen ecephys quality metrics) -> {cluster_id: {column: value}}; the
    unnamed pandas index column is dropped."""
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or "cluster_id" not in rows[0]:
        raise ReaderError(path, "no cluster_id column")
    header = rows[0]
    keep = [i for i, h in enumerate(header) if h]
    ci = header.index("cluster_id")
    out: dict[int, dict] = {}
    for n, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != len(header):
            raise ReaderError(path, f"line {n} has {len(row)} fields, header has {len(header)}")
        try:
            cid = int(float(row[ci]))
        except ValueError:
            raise ReaderError(path, f"line {n}: cluster_id {row[ci]!r} is not a number") from None
        out[cid] = {header[i]: _value(row[i]) for i in keep}
    return out


# ----------------------------------------------------------------------------- derived
def template_of_clusters(cluster_ids: np.ndarray, spike_clusters: np.ndarray,
                         spike_templates: np.ndarray | None) -> np.ndarray:
    """Most common template of each cluster. Before any phy merge/split every cluster is its
    own template (checked in one pass); only clusters with mixed spikes need counting."""
    out = cluster_ids.copy()
    if spike_templates is None:
        return out
    mixed_spikes = spike_templates != spike_clusters
    if not mixed_spikes.any():
        return out
    mixed = np.unique(np.asarray(spike_clusters[mixed_spikes]))
    sel = np.isin(spike_clusters, mixed)
    n_t = int(spike_templates.max()) + 1
    key = np.asarray(spike_clusters[sel]).astype(np.int64) * n_t + spike_templates[sel]
    pairs, counts = np.unique(key, return_counts=True)
    clus, tmpl = np.divmod(pairs, n_t)
    for c in mixed:
        rows = np.flatnonzero(clus == c)
        i = np.searchsorted(cluster_ids, c)
        out[i] = tmpl[rows[np.argmax(counts[rows])]]
    return out


def peak_channels(templates: np.ndarray, template_ids: np.ndarray) -> np.ndarray:
    """Channel with the largest peak-to-peak amplitude of each template."""
    t = np.asarray(templates[template_ids])
    return np.ptp(t, axis=1).argmax(axis=1).astype(np.int64)


# ----------------------------------------------------------------------------- reader
def _list_folder(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        raise ReaderError(folder, "sorting folder does not exist") from None
    except NotADirectoryError:
        raise ReaderError(folder, "is not a folder") from None
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno == errno.ELOOP:
            why += " (a symlink loop)"
        raise ReaderError(folder, f"cannot list the sorting folder: {why}") from None


def read_kilosort(folder: Path | str, n_samples: int | None = None) -> SortingOutput:
    """Read one phy folder. n_samples (the recording length) enables the check that no spike
    lies past the end of the recording, the sign of a sorting of another file."""
    folder = Path(folder)
    names = _list_folder(folder)

    def f(name: str) -> Path:
        return folder / name

    spike_times = vector(f("spike_times.npy"), load_npy(f("spike_times.npy")), INTEGER,
                         "n = number of spikes")
    n = spike_times.shape[0]
    spike_shapes = [(n,), (n, 1)]
    what = f"n = {n} spikes, as in spike_times.npy"

    def spike_vector(name: str, kinds: str, required: bool = True) -> np.ndarray | None:
        arr = load_npy(f(name), required)
        if arr is None:
            return None
        if arr.ndim in (1, 2) and arr.shape[0] != n and (arr.ndim == 1 or arr.shape[1] == 1):
            raise ReaderError(f(name), f"has {arr.shape[0]} spikes but spike_times.npy has {n}"
                                       f" (spike arrays of unequal length)")
        return check_array(f(name), arr, spike_shapes, kinds, what).reshape(-1)

    spike_templates = spike_vector("spike_templates.npy", INTEGER,
                                   required="spike_clusters.npy" not in names)
    spike_clusters = spike_vector("spike_clusters.npy", INTEGER, required=False)
    if spike_clusters is None:  # phy's rule: no manual clustering yet -> template = cluster
        spike_clusters = spike_templates
    amplitudes = spike_vector("amplitudes.npy", FLOAT)

    channel_map = load_npy(f("channel_map.npy"))
    channel_map = check_array(f("channel_map.npy"), channel_map,
                              [("n_ch",), ("n_ch", 1), (1, "n_ch")], INTEGER, "n_ch channels")
    channel_map = np.asarray(channel_map).reshape(-1).astype(np.int64)
    n_ch = channel_map.shape[0]
    channel_positions = np.asarray(check_array(
        f("channel_positions.npy"), load_npy(f("channel_positions.npy")), [(n_ch, 2)], REAL,
        f"n_ch = {n_ch} channels as in channel_map.npy, x and y")).astype(float)
    templates = load_npy(f("templates.npy"))
    if templates is not None:
        templates = check_array(f("templates.npy"), templates, [("n_templates", "nt", n_ch)],
                                FLOAT, f"n_templates, nt samples, n_ch = {n_ch} channels")
    # phy-format exports of KS2-4 write dense templates (one column per channel, and
    # templates_ind.npy is the identity), so n_ch columns are required.

    # ranges (one pass each over memory-mapped data)
    st = as_int64(spike_times)
    if n:
        first, last = int(st.min()), int(st.max())
        if first < 0:
            raise ReaderError(f("spike_times.npy"), f"negative spike sample {first}")
        if n_samples is not None and last >= n_samples:
            raise ReaderError(f("spike_times.npy"),
                              f"last spike at sample {last} is past the end of the recording "
                              f"(n_samples={n_samples})")
        if int(spike_clusters.min()) < 0:
            raise ReaderError(f("spike_clusters.npy"), "negative cluster id")
    if spike_templates is not None and templates is not None and n:
        top = int(spike_templates.max())
        if top >= templates.shape[0]:
            raise ReaderError(f("spike_templates.npy"), f"template {top} does not exist "
                                                        f"(templates.npy has {templates.shape[0]})")

    cluster_ids, counts = count_clusters(spike_clusters)
    ks_labels = read_cluster_tsv(f("cluster_KSLabel.tsv"))
    groups = read_cluster_tsv(f("cluster_group.tsv"))
    quality = {int(c): groups.get(int(c)) or ks_labels.get(int(c)) or UNSORTED
               for c in cluster_ids}
    tmpl = template_of_clusters(cluster_ids, spike_clusters, spike_templates)
    if templates is not None:
        peaks = peak_channels(templates, tmpl)
    else:
        peaks = np.zeros(len(cluster_ids), np.int64)
    params = read_params(f("params.py")) if "params.py" in names else {}
    sample_rate = params.get("sample_rate")

    mean_waveforms: dict[int, np.ndarray] = {}
    mw = load_npy(f("mean_waveforms.npy"), required=False)
    if mw is not None:
        check_array(f("mean_waveforms.npy"), mw, [("n_clusters", n_ch, "nt")], FLOAT,
                    f"n_clusters (indexed by cluster id), n_ch = {n_ch} channels, nt samples")
        mean_waveforms = {int(c): np.asarray(mw[c]) for c in cluster_ids if c < mw.shape[0]}

    return SortingOutput(
        path=folder, sorter="kilosort", sample_rate=float(sample_rate) if sample_rate else None,
        spike_times=st, spike_clusters=spike_clusters, amplitudes=amplitudes,
        cluster_ids=cluster_ids, spike_counts=counts, quality=quality,
        curated="phy.log" in names, peak_channels=peaks,
        unit_positions=channel_positions[peaks] if n_ch else np.zeros((len(peaks), 2)),
        channel_map=channel_map, channel_positions=channel_positions, params=params,
        metrics=read_metrics(f("metrics.csv")), mean_waveforms=mean_waveforms,
        templates=templates, spike_templates=spike_templates, ks_labels=ks_labels,
        groups=groups)

"""Ephys readers (SpikeGLX meta, Kilosort, JRCLUST, NIDQ sync) against simulator ground truth.

No database: a tiny simulated share and the broken-input catalogue are written once per
module; every probe is read with the real readers and compared with manifest.json."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from probeinterface.neuropixels_tools import build_neuropixels_probe

from ingest.readers.errors import ReaderError
from ingest.readers.jrclust import read_jrclust_v4, read_mat
from ingest.readers.kilosort import read_kilosort, read_params
from ingest.readers.spikeglx import electrode_config, read_meta, read_recording
from ingest.readers.sync import (BitcodeMismatch, decode_bitcodes, match_trials,
                                 read_bitcode_edges, read_bitcode_mat, read_sync_bitcodes,
                                 read_trial_starts)
from ingest.simulator import simulate_share, write_broken_catalogue

SEED = 11
TYPE_NAMES = {0: "neuropixels 1.0 - 3B", 21: "neuropixels 2.0 - SS", 24: "neuropixels 2.0 - MS"}


@pytest.fixture(scope="module")
def share(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("share")
    return root, simulate_share(root, scale="tiny", seed=SEED)


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> tuple[Path, list, dict]:
    root = tmp_path_factory.mktemp("broken")
    cases = write_broken_catalogue(root, seed=SEED)
    return root, cases, json.loads((root / "manifest.json").read_text())


def ephys_sessions(manifest: dict) -> list[dict]:
    return [s for s in manifest["sessions"] if s.get("ephys")]


def probes(manifest: dict, sorter: str | None = None) -> list[tuple[dict, dict]]:
    out = [(s, p) for s in ephys_sessions(manifest) for p in s["ephys"]["probes"]
           if sorter is None or p["sorter"] == sorter]
    assert out, f"the share has no {sorter or 'ephys'} probe"
    return out


# ----------------------------------------------------------------------------- SpikeGLX
def test_read_meta_keeps_tilde_keys_both_ways(share):
    root, m = share
    _, p = probes(m)[0]
    meta = read_meta(root / p["meta"])
    assert meta["~imroTbl"] == meta["imroTbl"]
    assert meta["imroTbl"].startswith(f"({p['type_code']},384)")
    assert meta["~snsShankMap"] == meta["snsShankMap"]
    assert meta["nSavedChans"] == str(p["n_saved_channels"])
    assert meta["typeThis"] == "imec"


def test_recordings_match_manifest(share):
    root, m = share
    seen_types = set()
    for s, p in probes(m):
        e = s["ephys"]
        r = read_recording(root / p["meta"])
        seen_types.add(r.probe_type_code)
        assert r.probe_type_code == p["type_code"]
        assert r.probe_type == TYPE_NAMES[p["type_code"]]
        assert r.probe_serial == p["serial"]
        assert r.part_number == p["part_number"]
        assert r.n_saved_channels == p["n_saved_channels"]
        assert r.n_samples == e["n_samples"]
        assert r.sample_rate == e["sample_rate"]
        assert r.duration_s == pytest.approx(e["duration_s"])
        assert r.imec == p["imec"] and r.probe_number == p["probe"]
        assert r.file_create_time == dt.datetime.fromisoformat(p["file_create_time"])
        assert r.uv_per_bit == p["uv_per_bit"]
        assert r.bin_path == root / p["bin"]
        assert len(r.electrodes) == p["n_saved_channels"] - 1
        assert [el.acquired_channel for el in r.electrodes] == p["saved_channels"]
        assert [el.channel for el in r.electrodes] == list(range(len(r.electrodes)))
        assert r.file_sha1 and len(r.file_sha1) == 40
    assert seen_types == {0, 21, 24}  # NP1.0, NP2.0 single shank, NP2.0 four shanks


def test_electrodes_agree_with_probeinterface_and_kilosort(share):
    root, m = share
    for _, p in probes(m):
        r = read_recording(root / p["meta"])
        full = build_neuropixels_probe(p["part_number"])
        pos = full.contact_positions
        shanks = (np.zeros(len(pos), int) if full.shank_ids is None
                  else np.asarray(full.shank_ids).astype(int))
        for el in r.electrodes:
            assert (el.x_um, el.y_um) == tuple(pos[el.electrode])
            assert el.shank == shanks[el.electrode]
        ptype, used = electrode_config(r)
        assert ptype == TYPE_NAMES[p["type_code"]]
        assert used == sorted(el.electrode for el in r.electrodes)
        if p["type_code"] == 24:   # 4 saved channels per shank, shank-major numbering
            assert sorted({el.shank for el in r.electrodes}) == [0, 1, 2, 3]
            assert all(el.electrode // 1280 == el.shank for el in r.electrodes)
        else:
            assert used == p["saved_channels"]   # bank 0: electrode = readout channel
        if p["sorter"] == "kilosort2":
            ks_pos = np.load(root / p["sorting"] / "channel_positions.npy")
            assert np.array_equal(ks_pos, [[el.x_um, el.y_um] for el in r.electrodes])


# ----------------------------------------------------------------------------- Kilosort
def test_kilosort_matches_manifest(share):
    root, m = share
    for s, p in probes(m, "kilosort2"):
        rec = read_recording(root / p["meta"])
        k = read_kilosort(root / p["sorting"], n_samples=rec.n_samples)
        units = p["units"]
        assert k.sorter == "kilosort" and k.sample_rate == rec.sample_rate
        assert k.cluster_ids.tolist() == [u["cluster_id"] for u in units]
        assert k.n_units == p["n_units"]
        assert k.spike_counts.tolist() == [u["spike_count"] for u in units]
        assert k.quality == {u["cluster_id"]: u["quality"] for u in units}
        assert k.ks_labels == {u["cluster_id"]: u["ks_label"] for u in units}
        assert k.groups == {u["cluster_id"]: u["group"] for u in units}
        assert k.curated is p["curated"]
        assert k.peak_channels.tolist() == [u["peak_channel"] for u in units]
        assert np.array_equal(k.unit_positions, k.channel_positions[k.peak_channels])
        assert k.channel_map.tolist() == list(range(p["n_saved_channels"] - 1))
        assert k.spike_times.dtype == np.int64 and k.n_spikes == sum(k.spike_counts)
        assert isinstance(k.spike_times, np.memmap)        # a view of the file, no copy
        assert np.all(np.diff(k.spike_times) >= 0) and k.spike_times[-1] < rec.n_samples
        assert k.params["n_channels_dat"] == p["n_saved_channels"]
        assert (root / p["sorting"] / k.params["dat_path"]).resolve() == (root / p["bin"]).resolve()
        assert sorted(k.metrics) == k.cluster_ids.tolist()
        assert [k.metrics[c]["peak_channel"] for c in k.cluster_ids] == k.peak_channels.tolist()
        assert k.metrics[0]["epoch_name_quality_metrics"] == "complete_session"
        assert set(k.mean_waveforms) == set(k.cluster_ids.tolist())
        assert k.mean_waveforms[0].shape == (p["n_saved_channels"] - 1, 82)
        per_unit = dict(k.unit_spike_times())
        assert {c: len(t) for c, t in per_unit.items()} == \
            {u["cluster_id"]: u["spike_count"] for u in units}
        assert all(np.all(np.diff(t) > 0) for t in per_unit.values())
        assert k.amplitudes.shape == (k.n_spikes,) and k.amplitudes.dtype.kind == "f"


def test_kilosort_curated_group_wins_over_kslabel(share):
    root, m = share
    changed = [(p, u) for _, p in probes(m, "kilosort2") for u in p["units"]
               if u["group"] != u["ks_label"]]
    assert changed, "the share should have a curated unit whose label changed"
    for p, u in changed:
        k = read_kilosort(root / p["sorting"])
        assert k.curated and k.quality[u["cluster_id"]] == u["group"] != u["ks_label"]


def test_kilosort_peak_channel_follows_most_common_template(share, tmp_path):
    """After a phy merge, cluster 0 holds spikes of two templates: its peak channel is the
    one of the template most of its spikes came from."""
    root, m = share
    _, p = probes(m, "kilosort2")[0]
    d = tmp_path / "ks"
    shutil.copytree(root / p["sorting"], d)
    clus = np.load(d / "spike_clusters.npy")
    merged = np.where(clus == 1, 0, clus).astype(np.int32)   # 1 merged into 0 ...
    np.save(d / "spike_clusters.npy", merged)
    k = read_kilosort(d)
    n0, n1 = (p["units"][0]["spike_count"], p["units"][1]["spike_count"])
    winner = p["units"][0 if n0 >= n1 else 1]["peak_channel"]
    assert 1 not in k.cluster_ids.tolist()
    assert k.spike_counts[k.unit_index(0)] == n0 + n1
    assert k.peak_channels[k.unit_index(0)] == winner


def test_kilosort_format_errors_name_file_and_problem(share, tmp_path):
    root, m = share
    _, p = probes(m, "kilosort2")[0]
    src = root / p["sorting"]

    def fresh(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    d = fresh("short_amps")
    np.save(d / "amplitudes.npy", np.load(d / "amplitudes.npy")[:-2])
    with pytest.raises(ReaderError, match=r"amplitudes\.npy.*unequal length"):
        read_kilosort(d)
    d = fresh("pos_shape")
    np.save(d / "channel_positions.npy", np.zeros((3, 2)))
    with pytest.raises(ReaderError,
                       match=r"channel_positions\.npy.*expected \(16, 2\).*found \(3, 2\)"):
        read_kilosort(d)
    d = fresh("times_float")
    np.save(d / "spike_times.npy", np.load(d / "spike_times.npy").astype(np.float32))
    with pytest.raises(ReaderError, match=r"spike_times\.npy.*dtype.*float32"):
        read_kilosort(d)
    d = fresh("params_code")
    (d / "params.py").write_text("import os\nsample_rate = 30000.0\n")
    with pytest.raises(ReaderError, match=r"params\.py.*line 1"):
        read_kilosort(d)
    (d / "params.py").write_text("sample_rate = float('30000')\n")
    with pytest.raises(ReaderError, match=r"params\.py.*sample_rate.*not a literal"):
        read_params(d / "params.py")
    d = fresh("ks2_column")   # Kilosort 2 writes (n, 1) uint64: accepted, read as int64 view
    st = np.load(d / "spike_times.npy")
    np.save(d / "spike_times.npy", st.astype(np.uint64).reshape(-1, 1))
    k = read_kilosort(d)
    assert k.spike_times.dtype == np.int64 and np.array_equal(k.spike_times, st)
    with pytest.raises(ReaderError, match=r"does not exist"):
        read_kilosort(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- JRCLUST
def test_jrclust_matches_manifest(share):
    root, m = share
    for s, p in probes(m, "jrclust_v4"):
        rec = read_recording(root / p["meta"])
        j = read_jrclust_v4(root / p["sorting"], n_samples=rec.n_samples)
        units = p["units"]
        # JRCLUST numbers clusters from 1; the manifest's cluster_id is 0-based
        assert j.cluster_ids.tolist() == [u["cluster_id"] + 1 for u in units]
        assert j.spike_counts.tolist() == [u["spike_count"] for u in units]
        assert j.quality == {u["cluster_id"] + 1: u["quality"] for u in units}
        assert j.curated is p["curated"] is True
        assert j.peak_channels.tolist() == [u["peak_channel"] for u in units]
        assert j.sample_rate == rec.sample_rate
        assert np.array_equal(j.channel_positions, [[e.x_um, e.y_um] for e in rec.electrodes])
        assert np.array_equal(j.unit_positions, j.channel_positions[j.peak_channels])
        assert j.metrics[1]["unitCount"] == units[0]["spike_count"]
        assert j.mean_waveforms[1].shape == (p["n_saved_channels"] - 1, 41)
        with h5py.File(root / p["sorting"], "r") as f:
            raw_t = f["spikeTimes"][()].ravel()
            raw_c = f["spikeClusters"][()].ravel()
        assert j.n_spikes == int((raw_c > 0).sum()) < len(raw_c)     # cluster 0 dropped
        assert np.array_equal(j.spike_times, raw_t[raw_c > 0].astype(np.int64) - 1)  # 0-based
        assert j.spike_times.dtype == np.int64


def test_jrclust_v5_reads_like_v73(share, tmp_path):
    """The same variables saved as MATLAB v5 (scipy) give the same SortingOutput."""
    root, m = share
    _, p = probes(m, "jrclust_v4")[0]
    src = root / p["sorting"]
    data = read_mat(src)
    v5 = tmp_path / src.name
    cells = np.empty((len(data["clusterNotes"]), 1), dtype=object)
    cells[:, 0] = data["clusterNotes"]
    scipy.io.savemat(v5, {**data, "clusterNotes": cells}, oned_as="column")
    shutil.copy(src.with_name(src.name.replace("_res.mat", ".prm")), tmp_path)
    assert not h5py.is_hdf5(v5)
    a, b = read_jrclust_v4(src), read_jrclust_v4(v5)
    for field in ("spike_times", "spike_clusters", "amplitudes", "cluster_ids", "spike_counts",
                  "peak_channels", "unit_positions", "channel_positions", "channel_map"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.quality == b.quality and a.metrics == b.metrics and a.params.keys() == b.params.keys()
    assert all(np.array_equal(a.mean_waveforms[c], b.mean_waveforms[c]) for c in a.mean_waveforms)


def test_jrclust_truncated_file(share, tmp_path):
    root, m = share
    _, p = probes(m, "jrclust_v4")[0]
    bad = tmp_path / "cut_res.mat"
    data = (root / p["sorting"]).read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ReaderError, match=r"cut_res\.mat.*not a readable MATLAB file"):
        read_jrclust_v4(bad)


# ----------------------------------------------------------------------------- sync
def test_sync_bitcodes_match_behaviour(share):
    root, m = share
    n_mat = 0
    for s in ephys_sessions(m):
        e = s["ephys"]
        starts, codes = read_sync_bitcodes(root / e["trial_starts_file"],
                                           root / e["bitcode_edges_file"])
        trials = s["trials"]
        assert len(starts) == s["n_trials"]
        assert codes.tolist() == [t["bitcode"] for t in trials]
        assert np.allclose(starts, [t["start"] + e["clock_offset_s"] for t in trials], atol=1e-6)
        mapping = match_trials(codes, {t["number"]: t["bitcode"] for t in trials},
                               source=root / e["bitcode_edges_file"])
        assert mapping == {i: t["number"] for i, t in enumerate(trials)}
        ingestable = [t for t in trials if t["protocol_type"] >= 3]
        assert len(ingestable) == s["n_trials_ingestable"] < len(trials)
        assert [int(codes[i]) for i, num in mapping.items() if trials[num - 1] in ingestable] \
            == [t["bitcode"] for t in ingestable]
        if e["bitcode_mat"]:
            n_mat += 1
            st, go, bc, num = read_bitcode_mat(root / e["bitcode_mat"])
            assert bc.tolist() == codes.tolist()
            assert num.tolist() == [t["number"] for t in trials]
            assert np.allclose(st, starts, atol=1e-6)
            assert np.allclose(go - st, [t["go_cue"] for t in trials], atol=2e-6)
    assert n_mat >= 1


def test_decode_and_match_rules():
    starts = np.array([1.0, 3.0, 5.0])
    # 0b1000000001 (bits 0 and 9), 0, 0b0101010101; plus a stray edge after the code
    edges = np.array([1.010, 1.046, 1.500, 5.014, 5.022, 5.030, 5.038, 5.046])
    assert decode_bitcodes(starts, edges).tolist() == [0b1000000001, 0, 0b0101010101]
    assert decode_bitcodes(starts, np.array([0.5])).tolist() == [0, 0, 0]  # before trial 1
    # recording starts late and ends early; a code repeats later in the session
    beh = [5, 7, 9, 7, 11, 13]
    assert match_trials([7, 9, 7, 11], beh) == {0: 2, 1: 3, 2: 4, 3: 5}
    assert match_trials([9, 4, 7], beh, max_unmatched=1) == {0: 3, 2: 4}
    with pytest.raises(BitcodeMismatch, match=r"sync\.txt.*1 of 3 ephys trials unmatched") as ei:
        match_trials([9, 4, 7], beh, source="sync.txt")
    assert ei.value.unmatched == [1] and isinstance(ei.value, ReaderError)


def test_sync_file_errors(tmp_path):
    f = tmp_path / "run_g0_tcat.nidq.XA_0_0.txt"
    f.write_text("1.0\n0.5\n")
    with pytest.raises(ReaderError, match=r"XA_0_0\.txt.*increasing"):
        read_trial_starts(f)
    f.write_text("1.0\nabc\n")
    with pytest.raises(ReaderError, match=r"XA_0_0\.txt.*line 2"):
        read_bitcode_edges(f)
    with pytest.raises(ReaderError, match=r"missing\.txt.*does not exist"):
        read_trial_starts(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- meta errors
def test_meta_errors(share, tmp_path):
    root, m = share
    _, p = probes(m)[0]
    meta = (root / p["meta"]).read_text()
    bin_file = root / p["bin"]

    def write(text: str, with_bin: bool = False, name: str = "x_g0_tcat.imec3.ap.meta") -> Path:
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        f = d / name
        f.write_text(text)
        if with_bin:
            shutil.copy(bin_file, f.with_suffix(".bin"))
        return f

    r = read_recording(write(meta))
    assert r.bin_path is None and r.imec == 3 and r.probe_number == 4
    f = write(meta.replace("imDatPrb_type=0", "imDatPrb_type=1100"))
    with pytest.raises(ReaderError, match=r"imec3\.ap\.meta.*unsupported probe type.*1100"):
        read_recording(f)
    size = int(read_meta(root / p["meta"])["fileSizeBytes"])
    f = write(meta.replace(f"fileSizeBytes={size}", f"fileSizeBytes={size + 2 * 17}"), True)
    with pytest.raises(ReaderError, match=rf"imec3\.ap\.bin.*{size} bytes on disk.*{size + 34}"):
        read_recording(f)
    f = write(meta.replace(f"fileSizeBytes={size}", f"fileSizeBytes={size + 1}"))
    with pytest.raises(ReaderError, match=r"fileSizeBytes.*whole number"):
        read_recording(f)
    f = write(meta.replace("imAiRangeMax=0.6", "imAiRangeMax=0.6\nnot a key value line"))
    with pytest.raises(ReaderError, match=r"line \d+ is not key=value"):
        read_meta(f)
    # NP1.0 at AP gain 250 instead of 500: twice the uV per bit, computed from the meta
    r = read_recording(write(meta.replace(" 500 250 1)", " 250 250 1)")))
    assert r.uv_per_bit == pytest.approx(4.6875)


# ----------------------------------------------------------------------------- broken catalogue
def _broken_session(manifest: dict, case: str) -> dict:
    return next(s for s in manifest["sessions"] if s.get("broken_case") == case)


def _read_broken(root: Path, manifest: dict, c: dict) -> None:
    """Read the broken case's session the way ingest would; must raise ReaderError."""
    s = _broken_session(manifest, c["case"])
    e = s["ephys"]
    p = e["probes"][0]
    if c["case"] == "meta_missing_samprate":
        read_recording(root / p["meta"])
    elif c["case"] == "bitcode_mismatch":
        codes = decode_bitcodes(read_trial_starts(root / e["trial_starts_file"]),
                                read_bitcode_edges(root / e["bitcode_edges_file"]))
        match_trials(codes, {t["number"]: t["bitcode"] for t in s["trials"]},
                     source=root / e["bitcode_edges_file"])
    else:
        n = read_recording(root / p["meta"]).n_samples
        read_kilosort(root / p["sorting"], n_samples=n)


EPHYS_CASES = ("npy_wrong_shape", "npy_wrong_dtype", "meta_missing_samprate",
               "bitcode_mismatch", "spikes_past_end", "unreadable_directory")


def test_broken_catalogue_covers_ephys_cases(broken):
    _, cases, _ = broken
    assert sorted(c["case"] for c in cases if c["kind"] == "ephys") == sorted(EPHYS_CASES)


@pytest.mark.parametrize("case", EPHYS_CASES)
def test_broken_ephys_case_raises_reader_error(broken, case):
    root, cases, manifest = broken
    c = next(c for c in cases if c["case"] == case)
    with pytest.raises(ReaderError) as ei:
        _read_broken(root, manifest, c)
    msg = str(ei.value)
    assert Path(c["path"]).name in msg and c["reason"] in msg, msg
    assert ei.value.path == root / c["path"]
    if case == "bitcode_mismatch":
        n = _broken_session(manifest, case)["n_trials"]
        assert isinstance(ei.value, BitcodeMismatch) and f"{n} of {n} ephys trials" in msg
    if case == "spikes_past_end":
        n = _broken_session(manifest, case)["ephys"]["n_samples"]
        assert f"n_samples={n}" in msg and f"sample {n + 30000}" in msg
    if case == "npy_wrong_shape":
        assert "expected (n,) or (n, 1)" in msg and ", 2)" in msg
    if case == "npy_wrong_dtype":
        assert "float64" in msg


def test_broken_sessions_otherwise_readable(broken):
    """Only the broken file fails: the rest of such a session still reads."""
    root, _, manifest = broken
    s = _broken_session(manifest, "spikes_past_end")
    p = s["ephys"]["probes"][0]
    k = read_kilosort(root / p["sorting"])          # no n_samples: no range check
    assert k.n_spikes == sum(u["spike_count"] for u in p["units"])
    s = _broken_session(manifest, "npy_wrong_shape")
    r = read_recording(root / s["ephys"]["probes"][0]["meta"])
    assert r.n_samples == s["ephys"]["n_samples"]

"""The rig-share simulator, checked with independent public readers against its manifest."""
from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
from pathlib import Path

import av
import h5py
import nrrd
import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml
from probeinterface import read_spikeglx

from ingest.simulator import main, simulate_share, write_broken_catalogue

REWARD = ("GiveLeftDrop", "GiveRightDrop")
EARLY = ("EarlyLickSample", "EarlyLickDelay")


@pytest.fixture(scope="module")
def share(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    return root, simulate_share(root, subjects=2, sessions=2, scale="tiny", seed=0)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    cases = write_broken_catalogue(root, seed=0)
    return root, cases, json.loads((root / "manifest.json").read_text())


def ephys_probes(m):
    for s in m["sessions"]:
        if s["ephys"]:
            for p in s["ephys"]["probes"]:
                yield s, p


def read_meta(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def decode(starts: np.ndarray, edges: np.ndarray) -> list:
    # independent implementation of the documented rule
    out = []
    bounds = list(starts[1:]) + [np.inf]
    for s0, s1 in zip(starts, bounds):
        code = 0
        for p in edges[(edges >= s0) & (edges < s1)]:
            code |= 1 << (9 - int(round((p - s0 - 0.010) / 0.004)))
        out.append(code)
    return out


# ----------------------------------------------------------------------------- manifest
def test_manifest_files_sizes_and_md5(share):
    root, m = share
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() and p.name != "manifest.json"}
    assert on_disk == set(m["files"])
    assert len(on_disk) > 100
    for rel, f in m["files"].items():
        data = (root / rel).read_bytes()
        assert len(data) == f["size"], rel
        assert hashlib.md5(data).hexdigest() == f["md5"], rel
    assert json.loads((root / "manifest.json").read_text())["files"] == m["files"]
    assert m["paths"]["behavior_data_paths"] == [["RRig", str(root.resolve() / "behavior"), 0]]
    assert set(m["paths"]) == {f"{k}_data_paths" for k in
                               ("behavior", "ephys", "tracking", "video", "histology", "ccf")}
    total = sum(f["size"] for f in m["files"].values())
    assert total < 80e6


def test_irregularities_present(share):
    root, m = share
    regs = [s for s in m["sessions"] if s["registered"]]
    assert len(regs) == 4
    days = {}
    for s in regs:
        days.setdefault((s["h2o"], s["date"]), []).append(s)
    same_day = [v for v in days.values() if len(v) == 2]
    assert len(same_day) == 1
    a, b = sorted(same_day[0], key=lambda s: s["start_time"])
    assert (a["session_number"], b["session_number"]) == (1, 2)
    assert b["ephys"]["run"] == f"{b['h2o']}_{b['date'].replace('-', '')}_1"
    assert a["ephys"]["run"] == f"{a['h2o']}_{a['date'].replace('-', '')}"
    # unregistered water-restriction number: a folder, not in subjects.yaml
    assert m["unregistered_h2o"] == ["xx99"]
    assert (root / "behavior" / "xx99").is_dir()
    subj = yaml.safe_load((root / "subjects.yaml").read_text())
    wrs = {s["water_restriction"]["water_restriction_number"] for s in subj["subjects"]}
    assert "xx99" not in wrs and wrs == set(m["registered_h2o"])
    unreg = [s for s in m["sessions"] if not s["registered"]]
    assert unreg[0]["session_number"] is None and unreg[0]["subject_id"] is None
    # training trials, clocks, behaviour-only session, both sorters, both probe types
    assert any(t["protocol_type"] < 3 for s in regs for t in s["trials"])
    offs = [s["ephys"]["clock_offset_s"] for s in regs if s["ephys"]]
    assert all(abs(o) <= 60 for o in offs) and min(offs) < -1 and max(offs) > 0
    assert any(s["ephys"] is None for s in regs)
    probes = [p for _, p in ephys_probes(m)]
    assert {p["type_code"] for p in probes} >= {0, 21, 24}
    assert [p["sorter"] for p in probes].count("jrclust_v4") == 1
    assert any(len(s["ephys"]["probes"]) == 2 for s in regs if s["ephys"])
    # session numbers are 1.. per subject in chronological order
    for h2o in m["registered_h2o"]:
        ss = sorted((s for s in regs if s["h2o"] == h2o), key=lambda s: (s["date"], s["start_time"]))
        assert [s["session_number"] for s in ss] == list(range(1, len(ss) + 1))


def test_subjects_yaml_and_csv(share):
    root, m = share
    y = yaml.safe_load((root / "subjects.yaml").read_text())
    assert y["people"] == [{"username": "daveliu", "fullname": "Dave Liu"}]
    assert y["rigs"][0]["rig"] == "RRig"
    s0 = y["subjects"][0]
    assert isinstance(s0["subject_id"], int) and isinstance(s0["date_of_birth"], dt.date)
    assert s0["sex"] in ("M", "F", "Unknown")
    assert isinstance(s0["surgeries"][0]["start_time"], dt.datetime)
    assert s0["surgeries"][0]["procedures"][0]["skull_reference"] == "Bregma"
    assert s0["water_restriction"]["wr_start_weight"] > 0
    csv = pd.read_csv(root / "subjects.csv")
    assert list(csv.columns) == ["subject_id", "username", "fullname", "cage_number",
                                 "date_of_birth", "sex", "animal_source", "strain",
                                 "water_restriction_number", "wr_start_date", "wr_start_weight"]
    assert csv["subject_id"].tolist() == [s["subject_id"] for s in y["subjects"]]
    assert csv["water_restriction_number"].tolist() == m["registered_h2o"]


# ----------------------------------------------------------------------------- behaviour
def test_behavior_mat_matches_manifest(share):
    root, m = share
    outcomes, early_seen, nan_seen, multi_row = set(), False, False, False
    for s in m["sessions"]:
        sd = scipy.io.loadmat(root / s["behavior_file"], squeeze_me=True,
                              struct_as_record=False)["SessionData"]
        assert sd.nTrials == s["n_trials"] == len(sd.TrialStartTimestamp)
        assert sd.Info.SessionDate == dt.date.fromisoformat(s["date"]).strftime("%d-%b-%Y")
        assert sd.Info.SessionStartTime_UTC == s["start_time"]
        assert sum(ts.GUI.ProtocolType >= 3 for ts in sd.TrialSettings) == s["n_trials_ingestable"]
        for i, t in enumerate(s["trials"]):
            gui = sd.TrialSettings[i].GUI
            assert gui.randomID == t["bitcode"] and 0 <= gui.randomID < 1024
            assert gui.ProtocolType == t["protocol_type"]
            assert bool(gui.Autowater) == t["auto_water"]
            assert np.isclose(sd.TrialStartTimestamp[i], t["start"])
            assert sd.TrialTypes[i] == (1 if t["instruction"] == "left" else 0)
            tr = sd.RawEvents.Trial[i]
            visited = {n for n in tr.States._fieldnames
                       if not np.isnan(np.atleast_2d(getattr(tr.States, n))[0, 0])}
            nan_seen |= len(visited) < len(tr.States._fieldnames)
            multi_row |= any(np.atleast_2d(getattr(tr.States, n)).shape[0] > 1 for n in visited)
            early = bool(visited & set(EARLY))
            outcome = ("hit" if visited & set(REWARD) else
                       "miss" if "TimeOut" in visited and not early else "ignore")
            assert (outcome, early) == (t["outcome"], t["early_lick"])
            outcomes.add(outcome)
            early_seen |= early
            ev = tr.Events
            nl = np.atleast_1d(getattr(ev, "Port1In", [])).size
            nr = np.atleast_1d(getattr(ev, "Port2In", [])).size
            assert (nl, nr) == (len(t["licks_left"]), len(t["licks_right"]))
            assert np.allclose(np.atleast_1d(getattr(ev, "Port1In", [])), t["licks_left"])
        assert len(sd.RawData.OriginalStateData) == s["n_trials"]
    assert outcomes == {"hit", "miss", "ignore"} and early_seen and nan_seen and multi_row
    assert any(t["auto_water"] for s in m["sessions"] for t in s["trials"])


# ----------------------------------------------------------------------------- ephys
def test_spikeglx_meta_and_bin(share):
    root, m = share
    for s, p in ephys_probes(m):
        meta_path = root / p["meta"]
        meta = read_meta(meta_path)
        nsaved = int(meta["nSavedChans"])
        assert nsaved == p["n_saved_channels"] == len(p["saved_channels"]) + 1
        assert meta["imSampRate"] == "30000" and meta["typeThis"] == "imec"
        size = (root / p["bin"]).stat().st_size
        assert size == int(meta["fileSizeBytes"]) == s["ephys"]["n_samples"] * nsaved * 2
        assert np.isclose(float(meta["fileTimeSecs"]), size / (2 * nsaved * 30000))
        assert meta["fileSHA1"] == hashlib.sha1((root / p["bin"]).read_bytes()).hexdigest().upper()
        created = dt.datetime.fromisoformat(meta["fileCreateTime"])
        start = dt.datetime.fromisoformat(f"{s['date']}T{s['start_time']}")
        assert abs((created - start).total_seconds()) <= 90
        for key in ("catGTCmdline0", "catNFiles", "catGVals", "catTVals", "imAiRangeMax",
                    "imDatPrb_pn", "imDatPrb_sn", "~imroTbl", "~snsChanMap", "~snsShankMap"):
            assert key in meta
        assert int(meta["imDatPrb_type"]) == p["type_code"] and meta["imDatPrb_sn"] == p["serial"]
        probe = read_spikeglx(meta_path)
        assert probe.get_contact_count() == nsaved - 1
        assert probe.get_shank_count() == (4 if p["type_code"] == 24 else 1)
        data = np.memmap(root / p["bin"], dtype=np.int16, mode="r").reshape(-1, nsaved)
        assert data.shape[0] == s["ephys"]["n_samples"]
        assert set(np.unique(data[:60000, -1])) == {0, 64}  # 1 Hz sync square wave
        if p["sorter"] == "kilosort2":
            pos = np.load(root / p["sorting"] / "channel_positions.npy")
            assert np.allclose(pos, probe.contact_positions)


def test_sync_edges_and_bitcode_mat(share):
    root, m = share
    n_mat = 0
    for s in m["sessions"]:
        e = s["ephys"]
        if not e:
            continue
        starts = np.loadtxt(root / e["trial_starts_file"], ndmin=1)
        edges = np.loadtxt(root / e["bitcode_edges_file"], ndmin=1)
        bpod = np.array([t["start"] for t in s["trials"]])
        assert np.allclose(starts, bpod + e["clock_offset_s"], atol=1e-5)
        assert starts.min() > 0 and starts.max() < e["duration_s"]
        assert decode(starts, edges) == [t["bitcode"] for t in s["trials"]]
        if e["bitcode_mat"]:
            n_mat += 1
            bm = scipy.io.loadmat(root / e["bitcode_mat"], squeeze_me=True)
            assert [int(c, 2) for c in bm["bitCodeS"]] == [t["bitcode"] for t in s["trials"]]
            assert np.allclose(bm["sTrig"], starts)
            assert list(bm["trialNum"]) == list(range(1, len(starts) + 1))
    assert n_mat >= 1


def test_kilosort_output(share):
    root, m = share
    curated_seen = uncurated_seen = violator_seen = False
    for s, p in ephys_probes(m):
        if p["sorter"] != "kilosort2":
            continue
        d = root / p["sorting"]
        st = np.load(d / "spike_times.npy")
        cl = np.load(d / "spike_clusters.npy")
        assert st.dtype == np.int64 and cl.dtype == np.int32 and st.ndim == 1
        assert st.shape == cl.shape == np.load(d / "amplitudes.npy").shape
        assert np.all(np.diff(st) >= 0)
        assert st.min() >= 0 and st.max() < s["ephys"]["n_samples"]
        nch = p["n_saved_channels"] - 1
        n_units = len(p["units"])
        assert np.load(d / "templates.npy").shape == (n_units, 82, nch)
        assert np.load(d / "channel_map.npy").shape == (nch,)
        assert np.load(d / "mean_waveforms.npy").shape == (n_units, nch, 82)
        assert np.load(d / "amplitudes.npy").dtype == np.float64
        ks = pd.read_csv(d / "cluster_KSLabel.tsv", sep="\t")
        grp = pd.read_csv(d / "cluster_group.tsv", sep="\t")
        assert list(grp.columns) == ["cluster_id", "group"]
        metrics = pd.read_csv(d / "metrics.csv", index_col=0)
        assert {"firing_rate", "isi_viol", "presence_ratio", "amplitude_cutoff",
                "isolation_distance", "l_ratio", "d_prime"} <= set(metrics.columns)
        params = {}
        exec((d / "params.py").read_text(), params)
        assert params["n_channels_dat"] == p["n_saved_channels"] and params["sample_rate"] == 30000
        for u in p["units"]:
            mine = st[cl == u["cluster_id"]]
            assert len(mine) == u["spike_count"] > 0
            assert grp.set_index("cluster_id").loc[u["cluster_id"], "group"] == u["quality"]
            assert ks.set_index("cluster_id").loc[u["cluster_id"], "KSLabel"] == u["ks_label"]
            isi_ok = np.diff(mine).min() >= 45
            if u["quality"] == "good":
                assert isi_ok
            if u["isi_violations"]:
                assert not isi_ok
                violator_seen = True
        differs = (ks["KSLabel"] != grp["group"]).any()
        if p["curated"]:
            assert differs and (d / "phy.log").exists()
            curated_seen = True
        else:
            assert not differs and not (d / "phy.log").exists()
            uncurated_seen = True
    assert curated_seen and uncurated_seen and violator_seen


def test_jrclust_v73(share):
    root, m = share
    (s, p), = [(s, p) for s, p in ephys_probes(m) if p["sorter"] == "jrclust_v4"]
    path = root / p["sorting"]
    assert path.name.endswith(".ap_res.mat")
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f["spikeTimes"].attrs["MATLAB_class"] == b"int32"
        times = f["spikeTimes"][()].ravel()
        clus = f["spikeClusters"][()].ravel()
        assert f["spikeTimes"].shape == (1, len(times))
        assert times.min() >= 1 and times.max() <= s["ephys"]["n_samples"]
        notes = ["".join(map(chr, f[r][()].ravel())) for r in f["clusterNotes"][()].ravel()]
        wf = f["meanWfGlobal"][()]
        assert wf.shape == (len(p["units"]), p["n_saved_channels"] - 1, 41)
        assert len(f["clusterSites"][()].ravel()) == len(p["units"])
    label = {"single": "good", "multi": "mua", "noise": "noise"}
    for k, u in enumerate(p["units"]):
        assert (clus == k + 1).sum() == u["spike_count"]
        assert label[notes[k]] == u["quality"]
    assert (clus == 0).sum() > 0


# ----------------------------------------------------------------------------- tracking, video
def test_dlc_csvs(share):
    root, m = share
    n = 0
    for s in m["sessions"]:
        tk = s["tracking"]
        assert (tk is not None) == s["registered"]
        if tk is None:
            continue
        for cam, c in tk["cameras"].items():
            lines = (root / c["trial_map"]).read_text().splitlines()
            assert [tuple(map(int, ln.split("\t"))) for ln in lines] == \
                [(t["file_index"], t["trial"]) for t in c["trials"]]
            assert len(c["trials"]) < s["n_trials"]  # some trials not filmed
            for t in c["trials"][:2]:
                df = pd.read_csv(root / t["csv"], header=[0, 1, 2], index_col=0)
                assert df.columns.names == ["scorer", "bodyparts", "coords"]
                parts = set(df.columns.get_level_values(1))
                assert parts == {"nose", "tongue", "jaw", "left_paw", "right_paw", "lickport"}
                assert set(df.columns.get_level_values(2)) == {"x", "y", "likelihood"}
                assert len(df) == t["frames"] > 0
                n += 1
    assert n > 8


def test_videos_decode(share):
    root, m = share
    vids = [v for s in m["sessions"] for v in s["videos"]]
    assert len(vids) > 10
    for v in vids[:6]:
        with av.open(str(root / v["path"])) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == v["frames"] and frames[0].shape == (24, 32, 3)


# ----------------------------------------------------------------------------- histology, ccf
def test_ccf_and_histology(share):
    root, m = share
    vol, hdr = nrrd.read(str(root / "ccf" / "annotation_100.nrrd"))  # Allen-style (AP, DV, ML)
    assert vol.dtype == np.uint32 and vol.shape == (132, 80, 114)
    onto = pd.read_csv(root / "ccf" / "ontology.csv")
    assert list(onto.columns) == ["id", "acronym", "name", "structure_id_path", "color_hex_triplet"]
    ids = dict(zip(onto["id"], onto["acronym"]))
    labels = set(np.unique(vol).tolist()) - {0}
    assert labels <= set(ids) and {993, 985, 382, 997} <= labels
    seen = set()
    for s, p in ephys_probes(m):
        pdir = root / "histology" / s["h2o"] / (s["date"].replace("-", "") +
               ("_1" if s["same_day_index"] else "")) / f"probe{p['imec'] + 1}"
        files = sorted(pdir.glob("channel_locations_shank*.json"))
        assert len(files) == p["n_shanks"]
        for f in files:
            ch = {k: v for k, v in json.loads(f.read_text()).items() if k.startswith("channel_")}
            for c in ch.values():
                ijk = (round((5400 - c["y"]) / 100), round((332 - c["z"]) / 100),
                       round((5739 + c["x"]) / 100))
                assert vol[ijk] == c["brain_region_id"]
                assert ids[c["brain_region_id"]] == c["brain_region"]
                seen.add(c["brain_region"])
            picks = json.loads(f.with_name(f.name.replace("channel_locations", "xyz_picks"))
                               .read_text())["xyz_picks"]
            assert len(picks) >= 2 and len(picks[0]) == 3
    assert {"MOs", "CP", "fiber tracts"} <= seen


# ----------------------------------------------------------------------------- determinism, CLI
def test_determinism_and_cli(share, tmp_path):
    root, m = share
    assert main([str(tmp_path / "same"), "--seed", "0"]) == 0
    same = json.loads((tmp_path / "same" / "manifest.json").read_text())
    assert same["files"] == m["files"]
    other = simulate_share(tmp_path / "other", seed=1)
    assert other["files"] != m["files"]
    common = set(other["files"]) & set(m["files"])
    assert other["files"]["ccf/annotation_100.nrrd"] == m["files"]["ccf/annotation_100.nrrd"]
    assert sum(other["files"][k]["md5"] != m["files"][k]["md5"] for k in common) > 3


# ----------------------------------------------------------------------------- broken inputs
def test_broken_catalogue(broken):
    root, cases, m = broken
    assert m["broken"] == cases
    by = {c["case"]: c for c in cases}
    assert set(by) == {"truncated_mat", "npy_wrong_shape", "npy_wrong_dtype",
                       "meta_missing_samprate", "bitcode_mismatch", "spikes_past_end",
                       "dlc_missing_bodypart", "zero_byte_video", "unreadable_directory",
                       "missing_share_path"}
    file_cases = [c for c in cases if c["kind"] != "share"]
    assert len({c["session"]["behavior_file"] for c in file_cases}) == len(file_cases)
    yaml_h2o = {s["water_restriction"]["water_restriction_number"]
                for s in yaml.safe_load((root / "subjects.yaml").read_text())["subjects"]}
    assert {c["session"]["h2o"] for c in file_cases} <= yaml_h2o
    sessions = {s["behavior_file"]: s for s in m["sessions"]}
    good = [s for s in m["sessions"] if s["h2o"] != "br90" and s["registered"]]
    scipy.io.loadmat(root / good[0]["behavior_file"])  # the good ones still read

    with pytest.raises(Exception):
        scipy.io.loadmat(root / by["truncated_mat"]["path"], squeeze_me=True)
    assert np.load(root / by["npy_wrong_shape"]["path"]).ndim == 2
    assert np.load(root / by["npy_wrong_dtype"]["path"]).dtype == np.float64
    meta = read_meta(root / by["meta_missing_samprate"]["path"])
    assert "imSampRate" not in meta and "nSavedChans" in meta

    c = by["bitcode_mismatch"]
    s = sessions[c["session"]["behavior_file"]]
    starts = np.loadtxt(root / s["ephys"]["trial_starts_file"], ndmin=1)
    codes = decode(starts, np.loadtxt(root / c["path"], ndmin=1))
    truth = [t["bitcode"] for t in s["trials"]]
    assert len(codes) == len(truth) and all(a != b for a, b in zip(codes, truth))

    c = by["spikes_past_end"]
    s = sessions[c["session"]["behavior_file"]]
    assert np.load(root / c["path"]).max() >= s["ephys"]["n_samples"]

    df = pd.read_csv(root / by["dlc_missing_bodypart"]["path"], header=[0, 1, 2], index_col=0)
    assert "tongue" not in set(df.columns.get_level_values(1)) and len(df) > 0
    assert (root / by["zero_byte_video"]["path"]).stat().st_size == 0

    d = root / by["unreadable_directory"]["path"]
    assert d.is_symlink()
    with pytest.raises(OSError) as err:
        os.listdir(d)
    assert err.value.errno == errno.ELOOP
    assert by["unreadable_directory"]["path"] in m["symlinks"]
    assert not (root / by["missing_share_path"]["path"]).exists()

"""Ephys ingest against the simulator's ground truth: insertions, units, trials, re-sorting, broken input."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import RUN_DIR, use_share_paths, wipe_pipeline_data

TYPE_NAMES = {0: "neuropixels 1.0 - 3B", 21: "neuropixels 2.0 - SS", 24: "neuropixels 2.0 - MS"}


@pytest.fixture(scope="module")
def ingested(modules, tiny_share):
    """The tiny share scanned, its behaviour and then its ephys ingested once."""
    from ingest import behavior, share
    from ingest import ephys as ingest_ephys
    from ingest.runner import run_ingest
    from pipeline.subject_loader import load_subject_file

    root, manifest = tiny_share
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    share.scan(["behavior", "ephys"])
    behaviour = run_ingest(behavior.BehaviorIngest, progress=False)
    summary = run_ingest(ingest_ephys.EphysIngest, progress=False)
    yield {"root": root, "manifest": manifest, "summary": summary, "behaviour": behaviour, "modules": modules}
    wipe_pipeline_data(modules)


def ephys_sessions(manifest) -> list[dict]:
    return [s for s in manifest["sessions"] if s["registered"] and s["ephys"]]


def skey(s) -> dict:
    return {"subject_id": s["subject_id"], "session": s["session_number"]}


def ikey(s, p) -> dict:
    return {**skey(s), "insertion_number": p["probe"]}


def method_of(p) -> str:
    return "jrclust_v4" if p["sorter"] == "jrclust_v4" else "kilosort2"


def unit_id(p, u) -> int:
    """The pipeline keeps the sorter's own numbering: JRCLUST clusters are 1-based."""
    return u["cluster_id"] + 1 if p["sorter"] == "jrclust_v4" else u["cluster_id"]


def ground_truth_spikes(root: Path, p) -> dict[int, np.ndarray]:
    """Sample indices per unit, straight from the sorter's files (not through the pipeline's readers
    for Kilosort; JRCLUST through h5py)."""
    if p["sorter"] == "jrclust_v4":
        import h5py

        with h5py.File(root / p["sorting"], "r") as f:
            times = np.asarray(f["spikeTimes"]).ravel().astype(np.int64) - 1
            clusters = np.asarray(f["spikeClusters"]).ravel()
    else:
        times = np.load(root / p["sorting"] / "spike_times.npy").ravel()
        clusters = np.load(root / p["sorting"] / "spike_clusters.npy").ravel()
    return {int(c): np.sort(times[clusters == c]) for c in np.unique(clusters) if c > 0 or p["sorter"] != "jrclust_v4"}


def test_every_ephys_session_loaded(ingested):
    summary = ingested["summary"]
    assert summary.failed == 0, summary.errors
    assert summary.inserted == len(ephys_sessions(ingested["manifest"])) >= 3


def test_two_sessions_on_one_day_match_by_file_create_time(ingested):
    from ingest.ephys import EphysIngest

    manifest = ingested["manifest"]
    by_day = Counter((s["h2o"], s["date"]) for s in ephys_sessions(manifest))
    (h2o, date), n = by_day.most_common(1)[0]
    assert n == 2
    for s in ephys_sessions(manifest):
        if (s["h2o"], s["date"]) != (h2o, date):
            continue
        run = "catgt_" + s["ephys"]["run"] + "_g0"
        row = (EphysIngest & {"water_restriction_number": h2o, "ephys_run": run}).to_dicts()
        assert len(row) == 1 and (row[0]["subject_id"], row[0]["session"]) == (s["subject_id"], s["session_number"])


def test_probe_insertions_types_and_electrode_configs(ingested):
    ephys, lab = ingested["modules"]["ephys"], ingested["modules"]["lab"]
    configs = {}
    for s in ephys_sessions(ingested["manifest"]):
        assert len(ephys.ProbeInsertion & skey(s)) == len(s["ephys"]["probes"])
        for p in s["ephys"]["probes"]:
            row = (ephys.ProbeInsertion & ikey(s, p)).to_dicts()[0]
            assert row["probe"] == p["serial"] and row["probe_type"] == TYPE_NAMES[p["type_code"]]
            assert (lab.Probe & {"probe": p["serial"]}).to_dicts()[0]["probe_type"] == TYPE_NAMES[p["type_code"]]
            electrodes = lab.ElectrodeConfig.Electrode & {"electrode_config_name": row["electrode_config_name"]}
            assert len(electrodes) == p["n_saved_channels"] - 1
            shanks = set((lab.ProbeType.Electrode * electrodes.proj()).to_arrays("shank").tolist())
            assert len(shanks) == p["n_shanks"]
            rate = (ephys.ProbeInsertion.RecordingSystemSetup & ikey(s, p)).to_dicts()[0]["sampling_rate"]
            assert rate == s["ephys"]["sample_rate"]
            configs.setdefault((p["type_code"], tuple(p["saved_channels"])), set()).add(row["electrode_config_name"])
    assert {0, 21, 24} <= {t for t, _ in configs}  # every Neuropixels type the pipeline knows
    assert all(len(names) == 1 for names in configs.values())  # the same configuration is one row
    assert len(lab.ElectrodeConfig()) == len(configs)


def test_units_spike_counts_and_quality(ingested):
    ephys = ingested["modules"]["ephys"]
    root = ingested["root"]
    checked = 0
    for s in ephys_sessions(ingested["manifest"]):
        for p in s["ephys"]["probes"]:
            key = {**ikey(s, p), "clustering_method": method_of(p)}
            clustering = (ephys.Clustering & key).to_dicts()
            assert len(clustering) == 1
            assert clustering[0]["clustering_label"] == ("curated" if p["curated"] else "uncurated")
            units = {r["unit"]: r for r in (ephys.Unit & key).to_dicts()}
            assert len(units) == p["n_units"] == len(ephys.Unit & ikey(s, p))
            truth = ground_truth_spikes(root, p)
            for u in p["units"]:
                row = units[unit_id(p, u)]
                assert len(row["spike_times"]) == u["spike_count"] == len(truth[unit_id(p, u)])
                assert np.allclose(row["spike_times"], truth[unit_id(p, u)] / s["ephys"]["sample_rate"], rtol=0, atol=1e-12)
                assert row["unit_quality"] == u["quality"]
                assert len(row["spike_sites"]) == len(row["spike_depths"]) == u["spike_count"]
                assert set(np.unique(row["spike_sites"]).tolist()) == {row["electrode"]}
                checked += 1
    assert checked > 20
    assert Counter(ephys.Unit().to_arrays("unit_quality").tolist()).keys() >= {"good", "mua", "noise"}


def test_peak_electrode_amplitude_and_metrics(ingested):
    from ingest.readers.spikeglx import read_recording

    ephys = ingested["modules"]["ephys"]
    root = ingested["root"]
    for s in ephys_sessions(ingested["manifest"]):
        for p in s["ephys"]["probes"]:
            recording = read_recording(root / p["meta"])
            key = {**ikey(s, p), "clustering_method": method_of(p)}
            units = {r["unit"]: r for r in (ephys.Unit & key).to_dicts()}
            for u in p["units"]:
                row = units[unit_id(p, u)]
                site = recording.electrodes[u["peak_channel"]]
                assert row["electrode"] == site.electrode + 1
                assert (row["unit_posx"], row["unit_posy"]) == (site.x_um, site.y_um)
                assert row["unit_amp"] == pytest.approx(u["model"]["amplitude_uv"], rel=0.12)  # uV, per probe type
                assert abs(row["waveform"]).max() == pytest.approx(u["model"]["amplitude_uv"], rel=0.01)
            metrics = {r["unit"]: r for r in (ephys.ClusterMetric & key).to_dicts()}
            assert set(metrics) == set(units)
            if p["sorter"] == "kilosort2":
                assert len(ephys.WaveformMetric & key) == len(units)
                for u in p["units"]:
                    assert metrics[u["cluster_id"]]["isi_violation"] > 0 if u["isi_violations"] else True


def test_trial_spikes_relative_to_go_cue(ingested):
    ephys = ingested["modules"]["ephys"]
    root = ingested["root"]
    checked = 0
    for s in ephys_sessions(ingested["manifest"]):
        e = s["ephys"]
        starts = np.array([t["start"] for t in s["trials"]]) + e["clock_offset_s"]
        bounds = np.append(starts, e["duration_s"])
        ingestable = [(i, t) for i, t in enumerate(s["trials"]) if t["protocol_type"] >= 3]
        for p in e["probes"]:
            truth = ground_truth_spikes(root, p)
            key = {**ikey(s, p), "clustering_method": method_of(p)}
            sampled = [unit_id(p, u) for u in p["units"]][::2]
            for cid in sampled:
                rows = {r["trial"]: r for r in (ephys.Unit.TrialSpikes & key & {"unit": cid}).to_dicts()}
                assert sorted(rows) == [t["number"] for _, t in ingestable]
                seconds = truth[cid] / e["sample_rate"]
                for i, t in ingestable:
                    expected = seconds[(seconds >= bounds[i]) & (seconds < bounds[i + 1])]
                    go = t["start"] + t["go_cue"] + e["clock_offset_s"]
                    assert np.allclose(rows[t["number"]]["spike_times"], expected - go, atol=1e-9)
                    assert rows[t["number"]]["spike_count"] == len(expected)
                    checked += 1
            # MAP's query shapes: UnitTrial is the same rows; TrialSpikes restricted by behaviour
            assert len(ephys.Unit.UnitTrial & key) == p["n_units"] * len(ingestable)
            hits = ephys.Unit.TrialSpikes & key & (ingested["modules"]["experiment"].BehaviorTrial & "outcome = 'hit'")
            keys, spikes = hits.to_arrays("spike_times", include_key=True)
            assert len(keys) == len(spikes) == p["n_units"] * sum(t["outcome"] == "hit" for _, t in ingestable)
    assert checked > 30


def test_ephys_trial_events_on_the_recording_clock(ingested):
    ephys = ingested["modules"]["ephys"]
    for s in ephys_sessions(ingested["manifest"]):
        e = s["ephys"]
        events = ephys.TrialEvent & skey(s)
        go = dict(zip(*(events & "trial_event_type = 'go'").to_arrays("trial", "trial_event_time")))
        start = dict(zip(*(events & "trial_event_type = 'bitcodestart'").to_arrays("trial", "trial_event_time")))
        ingestable = [t for t in s["trials"] if t["protocol_type"] >= 3]
        assert sorted(go) == [t["number"] for t in ingestable]
        for t in ingestable:
            assert abs(float(start[t["number"]]) - (t["start"] + e["clock_offset_s"])) < 2e-6
            assert abs(float(go[t["number"]]) - (t["start"] + t["go_cue"] + e["clock_offset_s"])) < 2e-6


def test_psth_over_the_session(ingested):
    ephys = ingested["modules"]["ephys"]
    s = ephys_sessions(ingested["manifest"])[0]
    keys, edges, counts, n_trials = ephys.session_psth(skey(s), window=(-1.0, 1.0), bin_s=0.01)
    assert n_trials == s["n_trials_ingestable"] and counts.shape == (len(keys), 200)
    times = dict(((k["insertion_number"], k["clustering_method"], k["unit"]), t)
                 for k, t in zip(*(ephys.Unit & skey(s)).to_arrays("spike_times", include_key=True)))
    go = np.array([t["start"] + t["go_cue"] + s["ephys"]["clock_offset_s"] for t in s["trials"] if t["protocol_type"] >= 3])
    for k, row in zip(keys, counts):
        t = times[(k["insertion_number"], k["clustering_method"], k["unit"])]
        expected = sum(np.histogram(t - g, bins=edges)[0] for g in go)
        assert np.abs(row - expected).sum() <= 2  # float binning at exact edges may differ by a bin


def test_running_again_inserts_nothing(ingested):
    from ingest import ephys as ingest_ephys
    from ingest import share
    from ingest.runner import run_ingest

    ephys = ingested["modules"]["ephys"]
    before = (len(ephys.Unit()), len(ephys.Unit.TrialSpikes()), len(ephys.TrialEvent()))
    reports = share.scan(["ephys"])
    assert all(not r.new and not r.changed for r in reports)
    assert run_ingest(ingest_ephys.EphysIngest, progress=False).inserted == 0
    assert (len(ephys.Unit()), len(ephys.Unit.TrialSpikes()), len(ephys.TrialEvent())) == before
    assert ingest_ephys.ingest_report() == []


def test_resorting_is_archived_on_request_only(ingested, capsys):
    from ingest import ephys as ingest_ephys
    from ingest import share
    from ingest.runner import run_ingest
    from pipeline.jobs import clear_errors

    ephys = ingested["modules"]["ephys"]
    root = ingested["root"]
    s, p = next((s, p) for s in ephys_sessions(ingested["manifest"]) for p in s["ephys"]["probes"]
                if p["sorter"] == "kilosort2")
    key = {**ikey(s, p), "clustering_method": "kilosort2"}
    run_key = {"water_restriction_number": s["h2o"], "ephys_run": "catgt_" + s["ephys"]["run"] + "_g0"}
    group_file = root / p["sorting"] / "cluster_group.tsv"
    original, stat = group_file.read_bytes(), group_file.stat()
    before = {r["unit"]: r["unit_quality"] for r in (ephys.Unit & key).to_dicts()}
    n_trial_rows = len(ephys.Unit.TrialSpikes & key)
    try:
        # phy re-curation: every unit relabelled noise
        group_file.write_text("cluster_id\tgroup\n" + "".join(f"{u}\tnoise\n" for u in sorted(before)))
        share.scan(["ephys"])
        assert run_ingest(ingest_ephys.EphysIngest, progress=False).inserted == 0  # not without a request
        report = ingest_ephys.ingest_report()
        assert len(report) == 1 and "cluster_group.tsv" in report[0] and "--replace" in report[0]
        assert {r["unit"]: r["unit_quality"] for r in (ephys.Unit & key).to_dicts()} == before

        from pipeline.shell import main

        capsys.readouterr()
        assert main(["ingest-ephys", "--replace", "--no-scan", "--quiet"]) == 0  # as a user asks for it
        out = capsys.readouterr().out
        assert len([line for line in out.splitlines() if line.startswith("replace: ")]) == 1
        assert "EphysIngest: 1 inserted" in out and ", 0 failed" in out, out
        assert set((ephys.Unit & key).to_arrays("unit_quality").tolist()) == {"noise"}
        archived = (ephys.ArchivedClustering & key).to_dicts()
        assert len(archived) == 1 and archived[0]["archive"] == 1
        old = {r["unit"]: r for r in (ephys.ArchivedClustering.Unit & key).to_dicts()}
        assert {u: r["unit_quality"] for u, r in old.items()} == before
        assert all(len(old[u["cluster_id"]]["spike_times"]) == u["spike_count"] for u in p["units"])
        assert len(ephys.ArchivedClustering.ClusterMetric & key) == len(before)
        assert len(ephys.Unit.TrialSpikes & key) == n_trial_rows  # rebuilt, not doubled
        assert ingest_ephys.ingest_report() == []

        # a loaded run that comes back without a request is refused, not mixed
        (ingest_ephys.EphysIngest.EphysFile & run_key).delete_quick()
        (ingest_ephys.EphysIngest & run_key).delete_quick()
        refused = run_ingest(ingest_ephys.EphysIngest, progress=False)
        assert refused.failed == 1 and "already has clusterings" in refused.errors[0] and "--replace" in refused.errors[0]
    finally:
        group_file.write_bytes(original)
        os.utime(group_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    share.scan(["ephys"])
    clear_errors(ingest_ephys.EphysIngest)
    ingest_ephys.EphysReplace.insert1({**run_key, "requested": "2020-01-01 00:00:00"})
    again = run_ingest(ingest_ephys.EphysIngest, progress=False)
    assert (again.inserted, again.failed) == (1, 0), again.errors
    assert {r["unit"]: r["unit_quality"] for r in (ephys.Unit & key).to_dicts()} == before
    assert len(ephys.ArchivedClustering & key) == 2


# --- broken input ------------------------------------------------------------------------------

EPHYS_CASES = ("npy_wrong_shape", "npy_wrong_dtype", "meta_missing_samprate", "bitcode_mismatch",
               "spikes_past_end", "unreadable_directory")


@pytest.fixture(scope="module")
def broken_run(modules, ingested):
    from ingest import behavior
    from ingest import ephys as ingest_ephys
    from ingest import share
    from ingest.runner import run_ingest
    from ingest.simulator import write_broken_catalogue
    from pipeline.subject_loader import load_subject_file

    root = RUN_DIR / "broken-ephys-share"
    cases = {c["case"]: c for c in write_broken_catalogue(root, seed=5)}
    manifest = json.loads((root / "manifest.json").read_text())
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    scans = share.scan(["behavior", "ephys"])
    behaviour = run_ingest(behavior.BehaviorIngest, progress=False)
    summary = run_ingest(ingest_ephys.EphysIngest, progress=False)
    yield {"root": root, "cases": cases, "manifest": manifest, "summary": summary, "scans": scans,
           "behaviour": behaviour, "modules": modules}
    wipe_pipeline_data(modules)


def test_broken_cases_fail_only_their_session(broken_run):
    summary = broken_run["summary"]
    manifest = broken_run["manifest"]
    loadable = [s for s in manifest["sessions"] if s["registered"] and s["ephys"]
                and s.get("broken_case") not in (*EPHYS_CASES, "truncated_mat")]
    # every ephys case fails, and the run whose behaviour file is truncated has no session to join
    assert summary.failed == len(EPHYS_CASES) + 1, summary.errors
    assert summary.inserted == len(loadable)
    ephys, experiment = broken_run["modules"]["ephys"], broken_run["modules"]["experiment"]
    for name in (*EPHYS_CASES, "truncated_mat"):
        session = experiment.Session & f"session_date = '{broken_run['cases'][name]['session']['date']}'" \
            & {"subject_id": next(s["subject_id"] for s in manifest["sessions"] if s["h2o"] == "br90")}
        for table in (ephys.ProbeInsertion, ephys.Unit, ephys.Unit.TrialSpikes, ephys.TrialEvent):
            assert len(table & session.proj()) == 0, (name, table.__name__)


@pytest.mark.parametrize("case", EPHYS_CASES)
def test_broken_case_message_names_file_and_reason(broken_run, case):
    entry = broken_run["cases"][case]
    messages = [m for m in broken_run["summary"].errors if entry["path"].split("/", 1)[1] in m]
    assert len(messages) == 1, (case, broken_run["summary"].errors)
    assert entry["reason"].lower() in messages[0].lower()


def test_unmatched_recording_lists_candidates(broken_run):
    message = next(m for m in broken_run["summary"].errors if "matches no behaviour session" in m)
    assert "br90" in message and "sessions of that day" in message


def test_mapshell_errors_lists_ephys_failures(broken_run, capsys):
    from pipeline.shell import main

    assert main(["errors"]) == 0
    out = capsys.readouterr().out
    for case in EPHYS_CASES:
        assert broken_run["cases"][case]["path"].split("/", 1)[1] in out, case
    assert "EphysIngest" in out

"""Analysis tables against direct numpy computations on the simulator's session, and the analysis
functions on hand-made arrays."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.interpolate import CubicSpline
from scipy.stats import mannwhitneyu, poisson

from pipeline import analysis
from tests.analysis_support import clear_computed, ingest_analysis_share, session_of
from tests.conftest import wipe_pipeline_data

PERIODS = {"sample": (-2.4, -1.2), "delay": (-1.2, 0.0), "response": (0.0, 1.2)}


@pytest.fixture(scope="module")
def computed(modules):
    """The analysis share ingested, probe 2 located in the right hemisphere, everything computed once."""
    from pipeline import analysis_commands, ephys
    from pipeline.jobs import work

    manifest = ingest_analysis_share(modules)
    s, skey = session_of(manifest)
    probe2 = s["ephys"]["probes"][1]
    assert probe2["insertion"]["ml"] > 0 > s["ephys"]["probes"][0]["insertion"]["ml"]
    ephys.ProbeInsertion.InsertionLocation.insert1(
        {**skey, "insertion_number": probe2["probe"], "skull_reference": "Bregma", "ap_location": probe2["insertion"]["ap"],
         "ml_location": probe2["insertion"]["ml"], "depth": -probe2["insertion"]["depth"]}, allow_direct_insert=True)
    rounds = work(analysis_commands.computation_tables, once=True, sleep_s=0, log=lambda line: None)
    yield {"manifest": manifest, "session": s, "skey": skey, "rounds": rounds}
    clear_computed()
    wipe_pipeline_data(modules)


# --- direct computations from the stored data (numpy only) ---------------------------------------

def units_with_truth(computed):
    """(unit key, session-wide spike times, manifest unit, hemisphere) of every unit."""
    from pipeline import ephys

    s, skey = computed["session"], computed["skey"]
    out = []
    for p in s["ephys"]["probes"]:
        side = "left" if p["probe"] == 1 else "right"
        by_id = {u["cluster_id"]: u for u in p["units"]}
        rows = (ephys.Unit & {**skey, "insertion_number": p["probe"]}).to_dicts()
        for r in rows:
            key = {k: r[k] for k in ephys.Unit.primary_key}
            out.append((key, np.asarray(r["spike_times"], float), by_id[r["unit"]], side))
    return out


def trial_table(computed) -> dict[int, dict]:
    """Per ephys trial: instruction, outcome, early lick, photostim, go cue (recording clock), duration."""
    from pipeline import ephys, experiment

    skey = computed["skey"]
    trials = {r["trial"]: r for r in (experiment.BehaviorTrial & skey).to_dicts()}
    stim = set((experiment.PhotostimTrial & skey).to_arrays("trial").tolist())
    sess = {r["trial"]: float(r["stop_time"]) - float(r["start_time"]) for r in (experiment.SessionTrial & skey).to_dicts()}
    go = {r["trial"]: float(r["trial_event_time"]) for r in (ephys.TrialEvent & skey).to_dicts() if r["trial_event_type"] == "go"}
    return {t: {**trials[t], "stim": t in stim, "go": g, "duration": sess[t]} for t, g in go.items()}


def condition_trials(trials: dict, name: str) -> list[int]:
    def keep(r):
        if name.startswith("good_") and r["stim"]:
            return False
        if name == "all_noearlylick_stim" and not r["stim"]:
            return False
        if name == "all_noearlylick_nostim" and r["stim"]:
            return False
        if r["early_lick"] != "no early":
            return False
        for outcome in ("hit", "miss"):
            if name.endswith(outcome) and r["outcome"] != outcome:
                return False
        for side in ("left", "right"):
            if f"_{side}_" in name and r["trial_instruction"] != side:
                return False
        return True

    return sorted(t for t, r in trials.items() if keep(r))


def unit_trial_counts(key) -> tuple[np.ndarray, np.ndarray]:
    from pipeline import ephys, experiment

    spikes = {r["trial"]: r["spike_count"] for r in (ephys.Unit.TrialSpikes & key).proj("spike_count").to_dicts()}
    times = {r["trial"]: float(r["stop_time"]) - float(r["start_time"]) for r in (experiment.SessionTrial & key).to_dicts()}
    trials = sorted(spikes)
    return np.array([spikes[t] for t in trials], float), np.array([times[t] for t in trials])


# --- the tables --------------------------------------------------------------------------------

def test_every_table_complete_without_errors(computed):
    from pipeline import ephys, psth, tracking

    n_units = len(ephys.Unit & computed["skey"])
    assert n_units == sum(p["n_units"] for p in computed["session"]["ephys"]["probes"]) > 30
    made = Counter()
    for r in computed["rounds"]:
        made.update(r.made)
        assert not any(r.failed.values()), r.failed
    assert made == {"UnitStat": n_units, "UnitCellType": n_units, "MAPClusterMetric": n_units,
                    "UnitPassingCriteria": n_units, "UnitPsth": n_units * len(psth.CONDITIONS),
                    "PeriodSelectivity": n_units * 3, "UnitSelectivity": n_units,
                    "TrackingQC": len(tracking.Tracking & computed["skey"])}
    assert len(tracking.Tracking & computed["skey"]) > 50


def test_unit_stat_matches_direct_computation(computed):
    from pipeline import ephys

    violators, others = [], []
    for key, spikes, truth, _ in units_with_truth(computed):
        counts, durations = unit_trial_counts(key)
        rate = counts.sum() / durations.sum()
        isis = np.diff(spikes)
        expected_isi = (isis < 0.002).sum() / (2 * len(spikes) * 0.002) / rate
        row = (ephys.UnitStat & key).fetch1()
        assert row["avg_firing_rate"] == pytest.approx(rate, rel=1e-12)
        assert row["isi_violation"] == pytest.approx(expected_isi, rel=1e-12)
        (violators if truth["isi_violations"] else others).append(row["isi_violation"])
    assert len(violators) >= 3 and min(violators) > 0
    assert np.mean(violators) > 2 * np.mean(others)  # the model's refractory violators stand out


def test_cell_type_from_trough_to_peak(computed):
    from pipeline import ephys

    for key, _, _, _ in units_with_truth(computed):
        waveform = np.asarray((ephys.Unit & key).fetch1("waveform"), float)
        rate = (ephys.ProbeInsertion.RecordingSystemSetup & key).fetch1("sampling_rate")
        x = np.linspace(0, len(waveform) - 1, len(waveform) * 100)
        up = CubicSpline(np.arange(len(waveform)), waveform)(x)
        trough = np.argmin(up)
        width = (x[trough + np.argmax(up[trough:])] - x[trough]) / rate * 1000
        row = (ephys.UnitCellType & key).fetch1()
        assert row["waveform_width"] == pytest.approx(width, rel=1e-9)
        assert row["cell_type"] == ("FS" if width < 0.4 else "Pyr")


def test_drift_metric_matches_direct_computation(computed):
    from pipeline import ephys

    values = []
    for key, _, _, _ in units_with_truth(computed):
        counts, durations = unit_trial_counts(key)
        rates = counts / durations
        smooth = np.convolve(rates, np.ones(6) / 6, "same")[::6]
        cdf = poisson.cdf(smooth, rates.mean())
        expected = ((cdf > 0.95) | (cdf < 0.05)).mean()
        got = (ephys.MAPClusterMetric.DriftMetric & key).fetch1("drift_metric")
        assert got == pytest.approx(expected, abs=1e-12)
        values.append(got)
    assert 0 <= min(values) and max(values) <= 1 and len(set(values)) > 1


def test_passing_criteria_default_thresholds_and_region_hook(computed, monkeypatch):
    from pipeline import ephys, histology

    default = (ephys.PassingCriteriaThreshold & {"criteria_region": "default"}).fetch1()
    outcomes = Counter()
    for key, _, _, _ in units_with_truth(computed):
        stat = (ephys.UnitStat & key).fetch1()
        quality = (ephys.ClusterMetric & key).to_dicts()[0]
        failed = []
        if stat["isi_violation"] >= default["max_isi_violation"]:
            failed.append("isi_violation")
        if quality["amplitude_cutoff"] is not None and quality["amplitude_cutoff"] >= default["max_amplitude_cutoff"]:
            failed.append("amplitude_cutoff")
        if quality["presence_ratio"] is not None and quality["presence_ratio"] <= default["min_presence_ratio"]:
            failed.append("presence_ratio")
        if (ephys.MAPClusterMetric.DriftMetric & key).fetch1("drift_metric") >= default["max_drift_metric"]:
            failed.append("drift_metric")
        if (ephys.Unit & key).fetch1("unit_amp") <= default["min_unit_amp"]:
            failed.append("unit_amp")
        if stat["avg_firing_rate"] <= default["min_avg_firing_rate"]:
            failed.append("avg_firing_rate")
        row = (ephys.UnitPassingCriteria & key).fetch1()
        assert row["criteria_region"] == "default"  # no histology region: the default set
        assert row["failed_criteria"] == ",".join(failed) and bool(row["criteria_passed"]) == (not failed)
        outcomes[not failed] += 1
    assert outcomes[True] > 0 and outcomes[False] > 0

    # a region from histology selects its own thresholds (Medulla: unit_amp > 150 uV)
    key, _, _, _ = min(units_with_truth(computed), key=lambda u: abs((ephys.Unit & u[0]).fetch1("unit_amp") - 110))
    amp = (ephys.Unit & key).fetch1("unit_amp")
    monkeypatch.setattr(histology, "unit_brain_area", lambda k: "Medulla", raising=False)
    (ephys.UnitPassingCriteria & key).delete(prompt=False)
    ephys.UnitPassingCriteria.populate(key)
    row = (ephys.UnitPassingCriteria & key).fetch1()
    assert row["criteria_region"] == "Medulla"
    assert ("unit_amp" in row["failed_criteria"].split(",")) == (amp <= 150)


def test_unit_psth_matches_numpy_histogram(computed):
    from pipeline import psth

    trials = trial_table(computed)
    edges = np.linspace(-3, 3, 151)
    checked = 0
    sizes = {}
    for name in psth.CONDITIONS:
        chosen = condition_trials(trials, name)
        sizes[name] = len(chosen)
        go = np.array([trials[t]["go"] for t in chosen])
        for key, spikes, _, _ in units_with_truth(computed)[::3]:
            row = (psth.UnitPsth & key & {"trial_condition_name": name}).fetch1()
            assert row["psth_n_trials"] == len(chosen)
            if not len(chosen):
                assert row["unit_psth"] is None
                continue
            rel = np.concatenate([spikes - g for g in go])
            expected = np.histogram(rel, edges)[0] / len(go) / 0.04
            assert row["unit_psth"].shape == (150,)
            np.testing.assert_allclose(row["unit_psth"], expected, rtol=0, atol=1e-9)
            checked += 1
    assert sizes["good_noearlylick_left_hit"] + sizes["good_noearlylick_right_hit"] == sizes["good_noearlylick_hit"] > 10
    assert sizes["good_noearlylick_miss"] > 0 and sizes["all_noearlylick_stim"] > 0
    assert sizes["all_noearlylick_nostim"] + sizes["all_noearlylick_stim"] == sum(
        r["early_lick"] == "no early" for r in trials.values())
    assert checked > 100


def test_period_selectivity_matches_direct_test_and_the_model(computed):
    from pipeline import psth

    trials = trial_table(computed)
    hits = condition_trials(trials, "good_noearlylick_hit")
    go = np.array([trials[t]["go"] for t in hits])
    instruction = np.array([trials[t]["trial_instruction"] for t in hits])
    agree = 0
    diffs = []
    for key, spikes, truth, side in units_with_truth(computed):
        labels = []
        for period, (start, end) in PERIODS.items():
            counts = np.array([((spikes >= g + start) & (spikes < g + end)).sum() for g in go])
            rates = counts / (end - start)
            ipsi, contra = rates[instruction == side], rates[instruction != side]
            row = (psth.PeriodSelectivity & key & {"period": period}).fetch1()
            assert row["hemisphere"] == side
            assert row["ipsi_firing_rate"] == pytest.approx(ipsi.mean(), rel=1e-9)
            assert row["contra_firing_rate"] == pytest.approx(contra.mean(), rel=1e-9)
            p = mannwhitneyu(ipsi, contra, alternative="two-sided").pvalue
            assert row["p_value"] == pytest.approx(p, rel=1e-9)
            expected = "non-selective" if p >= 0.05 else ("ipsi-selective" if ipsi.mean() > contra.mean() else "contra-selective")
            assert row["period_selectivity"] == expected
            labels.append((expected, p))
            if period == "response":
                # the model: a go-cue bump of mod_rate, weight 1 on preferred trials and 0.3 on the others
                m = truth["model"]
                t = np.linspace(start, end, 2001)
                bump = np.exp(-0.5 * ((t - m["latency_s"]) / m["width_s"]) ** 2).mean()
                sign = 1 if m["preference"] == side else -1
                expected_diff = sign * 0.7 * m["go_cue_mod_hz"] * bump
                se = np.sqrt(ipsi.var(ddof=1) / len(ipsi) + contra.var(ddof=1) / len(contra))
                diffs.append((expected_diff, ipsi.mean() - contra.mean(), se))
                if abs(expected_diff) > 2 * se:  # the model makes the sign clear
                    assert np.sign(ipsi.mean() - contra.mean()) == np.sign(expected_diff), (key, m)
                    assert row["period_selectivity"] != ("contra-selective" if sign > 0 else "ipsi-selective")
                    agree += 1
        assert (psth.UnitSelectivity & key).fetch1("unit_selectivity") == analysis.unit_selectivity(labels)
    expected_diffs, observed, _ = np.array(diffs).T
    assert agree >= 2  # units whose model effect is over 2 standard errors: the sign of the model
    assert np.corrcoef(expected_diffs, observed)[0, 1] > 0.5, diffs  # and across all units
    assert {"ipsi-selective", "contra-selective"} <= set(psth.UnitSelectivity.to_arrays("unit_selectivity").tolist())


def test_tracking_qc_matches_direct_computation(computed):
    from pipeline import tracking

    checked = 0
    for feature, (part, prefix) in tracking.FEATURE_PARTS.items():
        for row in (part & computed["skey"]).to_dicts()[::5]:
            key = {k: row[k] for k in tracking.Tracking.primary_key}
            x, y, lik = (np.asarray(row[f"{prefix}_{c}"], float) for c in ("x", "y", "likelihood"))
            step = np.hypot(np.diff(x), np.diff(y))
            sure = (lik[1:] >= 0.9) & (lik[:-1] >= 0.9)
            qc = (tracking.TrackingQC.Feature & key & {"tracking_feature": feature}).fetch1()
            assert qc["n_frames"] == len(x) and qc["n_jumps"] == int((step[sure] > 20).sum())
            if sure.any():
                assert qc["max_jump"] == pytest.approx(step[sure].max(), rel=1e-6)
            else:
                assert qc["max_jump"] is None
            checked += 1
    assert checked > 30
    assert len(tracking.TrackingQC.Feature & computed["skey"]) == 6 * len(tracking.TrackingQC & computed["skey"])


# --- the functions on hand-made arrays ----------------------------------------------------------

def test_unit_stat_function():
    spikes = np.array([0.0, 0.001, 0.1, 0.2, 0.2015, 1.0])  # 2 ISIs under 2 ms
    isi, rate = analysis.unit_stat(spikes, [3, 3], [1.0, 2.0])
    assert rate == 2.0 and isi == pytest.approx(2 / (2 * 6 * 0.002) / 2.0)
    assert analysis.unit_stat(np.array([]), [], []) == (None, None)
    with pytest.raises(analysis.AnalysisInputError):
        analysis.unit_stat(np.array([1.0, 0.5]), [2], [1.0])


def test_waveform_width_and_cell_type():
    rate = 30000.0
    t = np.arange(82)
    narrow = -np.exp(-0.5 * ((t - 30) / 2) ** 2) + 0.4 * np.exp(-0.5 * ((t - 36) / 3) ** 2)   # peak ~0.2 ms later
    wide = -np.exp(-0.5 * ((t - 30) / 3) ** 2) + 0.4 * np.exp(-0.5 * ((t - 50) / 5) ** 2)    # peak ~0.67 ms later
    assert analysis.cell_type(analysis.waveform_width_ms(narrow, rate)) == "FS"
    assert analysis.waveform_width_ms(wide, rate) == pytest.approx(20 / rate * 1000, abs=0.05)
    assert analysis.cell_type(analysis.waveform_width_ms(wide, rate)) == "Pyr"
    assert analysis.waveform_width_ms(np.zeros(0), rate) is None
    assert analysis.cell_type(None) == "not classified"


def test_psth_and_period_rates_functions():
    go = np.array([10.0, 20.0])
    spikes = np.array([9.0, 10.01, 10.02, 12.99, 19.5, 20.5, 23.5])
    psth = analysis.unit_psth(spikes, go)
    assert psth.shape == (150,) and psth.sum() * 0.04 * 2 == pytest.approx(6)
    assert psth[int((10.01 - 10 + 3) / 0.04)] == pytest.approx(2 / 2 / 0.04)
    assert analysis.unit_psth(spikes, []) is None
    np.testing.assert_allclose(analysis.period_rates(spikes, go, 0.0, 1.2), [2 / 1.2, 1 / 1.2])


def test_selectivity_functions():
    result = analysis.period_selectivity([10, 11, 12, 13, 14, 15, 16], [1, 2, 3, 2, 1, 2, 3])
    assert result.selectivity == "ipsi-selective" and result.p_value < 0.05
    assert analysis.period_selectivity([1, 2, 3], [1, 2, 3]).selectivity == "non-selective"
    assert analysis.period_selectivity([], [1.0]).p_value is None
    assert analysis.unit_selectivity([("non-selective", 0.5), ("contra-selective", 0.01), ("ipsi-selective", 0.03)]) == "contra-selective"
    assert analysis.unit_selectivity([("non-selective", None)]) == "non-selective"
    assert analysis.hemisphere_from_ml(-1500) == "left" and analysis.hemisphere_from_ml(1500) == "right"


def test_passing_criteria_function():
    thresholds = {"max_isi_violation": 0.5, "min_unit_amp": 70.0, "min_presence_ratio": None}
    assert analysis.passing_criteria({"isi_violation": 0.1, "unit_amp": 80.0, "presence_ratio": 0.1}, thresholds) == (True, [])
    assert analysis.passing_criteria({"isi_violation": 0.9, "unit_amp": 50.0}, thresholds) == (False, ["isi_violation", "unit_amp"])
    assert analysis.passing_criteria({"isi_violation": None, "unit_amp": 80.0}, thresholds) == (True, [])


def test_tracking_jumps_function():
    x = np.array([0.0, 1.0, 30.0, 31.0, 80.0, 81.0])
    y = np.zeros(6)
    lik = np.array([1, 1, 1, 1, 0.2, 1.0])
    jumps = analysis.tracking_jumps(x, y, lik)
    assert (jumps.n_frames, jumps.n_jumps, jumps.max_jump) == (6, 1, 29.0)  # the 49 px move involves an unsure frame
    with pytest.raises(analysis.AnalysisInputError):
        analysis.tracking_jumps(x, y, lik[:3])

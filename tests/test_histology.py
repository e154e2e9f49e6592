"""Histology ingest against the simulator's ground truth: electrode positions, unit regions,
probe tracks, interpolation, MAP landmark files and broken input.

Expected values come from the manifest (regions per channel, units' peak channels, the
coordinate convention and bregma) and from the simulator's own geometry, never from the
pipeline's readers."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from ingest.simulator import ccf as sim_ccf
from ingest.simulator.spikeglx import electrode_of_channel
from tests.conftest import RUN_DIR, use_share_paths, wipe_pipeline_data

VERSION = "hist_sim100"
NP2_PER_SHANK = 1280  # probeinterface numbers a 4-shank NP2.0's sites shank by shank


def expected_electrode(p: dict, channel: int) -> int:
    """MAP electrode (1-based, probeinterface full-probe index + 1) of a saved channel."""
    shank, site = electrode_of_channel(p["type_code"], p["saved_channels"][channel])
    return shank * NP2_PER_SHANK + site + 1


def to_ccf(manifest: dict, x: float, y: float, z: float) -> tuple[float, float, float]:
    """(ML, DV, AP) CCF um from the manifest's stated convention: x = ml - bml, y = bap - ap, z = bdv - dv."""
    b = manifest["ccf"]["bregma_um"]
    return x + b["ml"], b["dv"] - z, b["ap"] - y


def probes_with_histology(manifest: dict):
    for s in manifest["sessions"]:
        if s["registered"] and s["ephys"]:
            for p in s["ephys"]["probes"]:
                if str(p["probe"]) in s["histology"]:
                    yield s, p, s["histology"][str(p["probe"])]


def ikey(s, p) -> dict:
    return {"subject_id": s["subject_id"], "session": s["session_number"], "insertion_number": p["probe"]}


def load_ccf(manifest, root, ccf) -> None:
    if not (ccf.AnnotationVersion & {"annotation_version": VERSION}):
        ccf.load_ccf(root / manifest["ccf"]["annotation"], root / manifest["ccf"]["ontology"], version_name=VERSION)


def wipe_histology(modules) -> None:
    from ingest import histology as ingest_histology

    histology = modules["histology"]
    for table in (ingest_histology.HistologyIngest, histology.InterpolatedShankTrack, histology.ClusteringCCF):
        table().jobs.delete_quick()
    for table in (ingest_histology.HistologyIngest, histology.ClusteringCCF, histology.ElectrodeCCFPosition,
                  histology.LabeledProbeTrack, ingest_histology.HistologyProbeFolder):
        table().delete(prompt=False)


@pytest.fixture(scope="module")
def ingested(modules, tiny_share):
    """The tiny share: subjects, CCF, behaviour, ephys, then histology, each ingested once."""
    from ingest import behavior, share
    from ingest import ephys as ingest_ephys
    from ingest import histology as ingest_histology
    from ingest.runner import run_ingest
    from pipeline.subject_loader import load_subject_file

    root, manifest = tiny_share
    wipe_pipeline_data(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    share.scan(["behavior", "ephys", "histology"])
    assert run_ingest(behavior.BehaviorIngest, progress=False).failed == 0
    # no CCF loaded yet: histology waits instead of failing
    for name in list(modules["ccf"].AnnotationVersion().to_arrays("annotation_version")):
        (modules["ccf"].AnnotationVersion & {"annotation_version": name}).delete(prompt=False)
    assert run_ingest(ingest_ephys.EphysIngest, progress=False).failed == 0
    waiting = run_ingest(ingest_histology.HistologyIngest, progress=False)
    assert (waiting.inserted, waiting.failed) == (0, 0)
    assert any("no CCF is loaded" in line for line in ingest_histology.histology_report())
    load_ccf(manifest, root, modules["ccf"])
    summary = run_ingest(ingest_histology.HistologyIngest, progress=False)
    yield {"root": root, "manifest": manifest, "summary": summary, "modules": modules}
    wipe_histology(modules)
    wipe_pipeline_data(modules)


def test_every_probe_with_histology_loaded(ingested):
    from ingest import histology as ingest_histology

    summary, manifest = ingested["summary"], ingested["manifest"]
    expected = list(probes_with_histology(manifest))
    assert summary.failed == 0, summary.errors
    assert summary.inserted == len(expected) == 4
    histology = ingested["modules"]["histology"]
    for s, p, _ in expected:
        assert (ingest_histology.HistologyIngest & ikey(s, p)).to_dicts()[0]["histology_probe"] == p["probe"]
        row = (histology.ElectrodeCCFPosition & ikey(s, p)).fetch1()
        assert (row["track_source"], row["annotation_version"]) == ("ibl_alignment_gui", VERSION)
    assert ingest_histology.histology_report() == []  # nothing waiting, nothing left to compute


def test_electrode_positions_and_regions_match_the_manifest(ingested):
    root, manifest = ingested["root"], ingested["manifest"]
    histology, ccf = ingested["modules"]["histology"], ingested["modules"]["ccf"]
    n = 0
    for s, p, shanks in probes_with_histology(manifest):
        rows = {r["electrode"]: r for r in (histology.ElectrodeCCFPosition.ElectrodePosition * ccf.CCFBrainRegion.proj("acronym")
                                           & ikey(s, p)).to_dicts()}
        assert not (histology.ElectrodeCCFPosition.ElectrodePositionError & ikey(s, p))
        assert len(rows) == p["n_saved_channels"] - 1
        for shank, entry in shanks.items():
            raw = json.loads((root / entry["channel_locations"]).read_text())
            for channel, acronym in entry["regions"].items():
                row = rows[expected_electrode(p, int(channel))]
                assert row["acronym"] == acronym, (s["h2o"], p["probe"], shank, channel)
                c = raw[f"channel_{channel}"]
                assert np.allclose([row["ccf_x"], row["ccf_y"], row["ccf_z"]], to_ccf(manifest, c["x"], c["y"], c["z"]), atol=0.01)
                n += 1
    assert n == 16 * 4


def test_shanks_of_the_four_shank_probe(ingested):
    histology, lab = ingested["modules"]["histology"], ingested["modules"]["lab"]
    four = [(s, p) for s, p, _ in probes_with_histology(ingested["manifest"]) if p["n_shanks"] == 4]
    assert len(four) == 1
    s, p = four[0]
    shanks = (histology.ElectrodeCCFPosition.ElectrodePosition * lab.ProbeType.Electrode & ikey(s, p)).to_arrays("shank")
    assert sorted(np.bincount(shanks).tolist()) == [0, 4, 4, 4, 4]
    tracks = (histology.InterpolatedShankTrack & ikey(s, p)).to_dicts()
    assert [(t["shank"], t["n_positioned"], t["fitted"]) for t in tracks] == [(k, 4, True) for k in (1, 2, 3, 4)]


def test_unit_regions_from_peak_electrodes(ingested):
    manifest = ingested["manifest"]
    histology, ccf, ephys = (ingested["modules"][m] for m in ("histology", "ccf", "ephys"))
    n = 0
    for s, p, shanks in probes_with_histology(manifest):
        regions = {int(c): a for entry in shanks.values() for c, a in entry["regions"].items()}
        got = {r["unit"]: r for r in (histology.UnitCCF * ccf.CCFBrainRegion.proj("acronym") & ikey(s, p)).to_dicts()}
        assert len(histology.UnitCCF & ikey(s, p)) == p["n_units"]
        for u in p["units"]:
            unit = u["cluster_id"] + 1 if p["sorter"] == "jrclust_v4" else u["cluster_id"]
            assert got[unit]["acronym"] == regions[u["peak_channel"]]
            assert got[unit]["position_source"] == "measured"
            n += 1
    assert n == sum(p["n_units"] for _, p, _ in probes_with_histology(manifest))
    # a unit's coordinate is its peak electrode's
    joined = ephys.Unit.proj("electrode") * histology.UnitCCF.proj(ux="ccf_x", uy="ccf_y", uz="ccf_z") * \
        histology.ElectrodeCCFPosition.ElectrodePosition.proj("ccf_x", "ccf_y", "ccf_z")
    rows = joined.to_dicts()
    assert len(rows) == n and all((r["ux"], r["uy"], r["uz"]) == (r["ccf_x"], r["ccf_y"], r["ccf_z"]) for r in rows)


def test_resorting_after_histology_recomputes_unit_regions(ingested, capsys):
    """--replace on an insertion whose units have CCF regions: the old regions go with the old units,
    and the next histology run gives the new units theirs."""
    import os

    from ingest import histology as ingest_histology
    from ingest import share
    from pipeline.shell import main

    histology, ephys = ingested["modules"]["histology"], ingested["modules"]["ephys"]
    s, p, _ = next((s, p, h) for s, p, h in probes_with_histology(ingested["manifest"]) if p["sorter"] == "kilosort2")
    key = ikey(s, p)
    group_file = ingested["root"] / p["sorting"] / "cluster_group.tsv"
    original, stat = group_file.read_bytes(), group_file.stat()
    before = len(histology.UnitCCF & key)
    assert before == p["n_units"]
    try:
        group_file.write_text("cluster_id\tgroup\n" + "".join(f"{u['cluster_id']}\tmua\n" for u in p["units"]))
        share.scan(["ephys"])
        capsys.readouterr()
        assert main(["ingest-ephys", "--replace", "--no-scan", "--quiet"]) == 0
        out = capsys.readouterr().out
        assert ", 0 failed" in out, out
        assert set((ephys.Unit & key).to_arrays("unit_quality").tolist()) == {"mua"}
        assert len(histology.UnitCCF & key) == 0  # the old units' regions went with them
        ingest_histology.histology_report()  # the histology stage fills regions of new clusterings
        assert len(histology.UnitCCF & key) == before
    finally:
        group_file.write_bytes(original)
        os.utime(group_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # back to the sorting the other tests expect, the same way
    share.scan(["ephys"])
    assert main(["ingest-ephys", "--replace", "--no-scan", "--quiet"]) == 0
    ingest_histology.histology_report()
    assert len(histology.UnitCCF & key) == before
    restored = dict(zip(*(ephys.Unit & key).to_arrays("unit", "unit_quality")))
    assert restored == {u["cluster_id"]: u["quality"] for u in p["units"]}


def test_good_units_in_a_region_is_one_expression(ingested):
    manifest = ingested["manifest"]
    histology, ccf, ephys = (ingested["modules"][m] for m in ("histology", "ccf", "ephys"))
    subject = manifest["subjects"][0]["subject_id"]
    expected = {"MOs": 0, "MO": 0}
    for s, p, shanks in probes_with_histology(manifest):
        if s["subject_id"] != subject:
            continue
        regions = {int(c): a for entry in shanks.values() for c, a in entry["regions"].items()}
        good = [u for u in p["units"] if u["quality"] == "good"]
        expected["MOs"] += sum(regions[u["peak_channel"]] == "MOs" for u in good)
        expected["MO"] += sum(regions[u["peak_channel"]] in ("MO", "MOs", "MOp") for u in good)
    query = ephys.Unit * histology.UnitCCF * ccf.CCFBrainRegion & "unit_quality = 'good'" & "acronym = 'MOs'" & {"subject_id": subject}
    assert len(query) == expected["MOs"] > 0
    below = histology.units_in("MO") & "unit_quality = 'good'" & {"subject_id": subject}
    assert len(below) == expected["MO"]
    assert len(histology.units_in("MO", include_descendants=False)) == 0  # nothing is labelled MO itself
    # the brain area used by per-region quality thresholds: MOs units are MAP's ALM
    one = query.proj().to_dicts()[0]
    assert histology.unit_brain_area(one) == "ALM"
    outside = (ephys.Unit.proj() - histology.UnitCCF.proj()).to_dicts()[:1]
    assert all(histology.unit_brain_area(k) is None for k in outside)


def test_labeled_tracks_are_the_xyz_picks(ingested):
    root, manifest = ingested["root"], ingested["manifest"]
    histology = ingested["modules"]["histology"]
    for s, p, shanks in probes_with_histology(manifest):
        points = (histology.LabeledProbeTrack.Point & ikey(s, p)).to_dicts()
        assert len(points) == 5 * len(shanks)
        by = {(r["shank"], r["order"]): r for r in points}
        order = 0
        for shank in sorted(shanks, key=int):
            picks = json.loads((root / shanks[shank]["xyz_picks"]).read_text())["xyz_picks"]
            for x, y, z in picks:
                r = by[(int(shank), order)]
                assert np.allclose([r["ccf_x"], r["ccf_y"], r["ccf_z"]], to_ccf(manifest, x, y, z), atol=0.01)
                order += 1


def test_fitted_track_follows_the_probe_to_the_brain_surface(ingested):
    manifest = ingested["manifest"]
    histology = ingested["modules"]["histology"]
    for s, p, _ in probes_with_histology(manifest):
        if p["n_shanks"] != 1:
            continue
        ins = p["insertion"]
        key = {**ikey(s, p), "shank": 1}
        surface = (histology.InterpolatedShankTrack.BrainSurfacePoint & key).fetch1()
        # the simulator's straight probe: x = ml + lateral - 16, entering at its surface_z
        x_entry = ins["ml"]
        ml, dv, ap = to_ccf(manifest, x_entry, ins["ap"], sim_ccf.surface_z(x_entry, ins["ap"]))
        assert abs(surface["ccf_z"] - ap) < 1 and abs(surface["ccf_y"] - dv) <= 150 and abs(surface["ccf_x"] - ml) <= 32
        deepest = (histology.InterpolatedShankTrack.DeepestElectrodePoint & key).fetch1()
        assert abs(deepest["ccf_y"] - (dv + ins["depth"])) < 1  # the tip electrode sits at depth below the surface
        points = (histology.InterpolatedShankTrack.Point & key).to_arrays("ccf_y")
        assert len(points) >= ins["depth"] / 100 - 1 and points.max() <= dv + ins["depth"] + 1
        assert not (histology.InterpolatedShankTrack.Electrode & key)  # every configured electrode had a position


# --- MAP landmarks, interpolation, points outside the atlas, broken input -----------------------

def _write_site_info(path, p, channel_locations: list, manifest, invalid: int) -> list:
    """MAP siteInfo.mat: 20 um voxel positions (ML, DV, AP) of the config's electrodes in ascending order."""
    import scipy.io

    entries = {}
    for raw in channel_locations:
        entries.update({int(k.split("_")[1]): v for k, v in raw.items() if k.startswith("channel_")})
    order = sorted(entries, key=lambda c: expected_electrode(p, c))
    ccf_points = np.array([to_ccf(manifest, entries[c]["x"], entries[c]["y"], entries[c]["z"]) for c in order]) / 20.0
    names = np.array([entries[c]["brain_region"] if i != invalid else "" for i, c in enumerate(order)], dtype=object)
    scipy.io.savemat(str(path), {"site": {"pos": {"x": ccf_points[:, 0], "y": ccf_points[:, 1], "z": ccf_points[:, 2]},
                                          "ont": {"name": names}}})
    return order


@pytest.fixture(scope="module")
def broken(ingested):
    """A second histology share: every probe's files altered one way; histology ingested again."""
    from ingest import histology as ingest_histology
    from ingest import share
    from ingest.runner import run_ingest

    root, manifest, modules = ingested["root"], ingested["manifest"], ingested["modules"]
    new = RUN_DIR / "broken-histology"
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(root / "histology", new)
    probes = {(s["h2o"], s["date"].replace("-", "") + (f"_{s['same_day_index']}" if s["same_day_index"] else ""), p["probe"]): (s, p, h)
              for s, p, h in probes_with_histology(manifest)}
    (first, second), four = sorted(k for k in probes if k[0] == "dl30" and probes[k][1]["n_shanks"] == 1), \
        next(k for k in probes if probes[k][1]["n_shanks"] == 4)
    other = next(k for k in probes if k[0] != "dl30")
    cases = {}
    # coordinates far outside the brain: DV sign flipped (z positive = above bregma)
    path = new / first[0] / first[1] / f"probe{first[2]}" / "channel_locations_shank1.json"
    raw = json.loads(path.read_text())
    for k, v in raw.items():
        if k.startswith("channel_"):
            v["z"] = -v["z"]
    path.write_text(json.dumps(raw))
    cases["far"] = first
    # a shank the probe type does not have
    folder = new / four[0] / four[1] / f"probe{four[2]}"
    shutil.copy(folder / "channel_locations_shank4.json", folder / "channel_locations_shank5.json")
    cases["shank"] = four
    # a probe the session does not have
    missing = (second[0], second[1], 2)
    (new / second[0] / second[1] / "probe2").mkdir()
    shutil.copy(new / second[0] / second[1] / "probe1" / "channel_locations_shank1.json",
                new / second[0] / second[1] / "probe2" / "channel_locations_shank1.json")
    cases["no_probe"] = missing
    # loads: two channels without a position (interpolated), the top one lifted 600 um (above the brain, inside the volume)
    path = new / second[0] / second[1] / f"probe{second[2]}" / "channel_locations_shank1.json"
    raw = json.loads(path.read_text())
    dropped = {3: raw.pop("channel_3"), 7: raw.pop("channel_7")}
    raw["channel_15"]["z"] += 600.0
    path.write_text(json.dumps(raw))
    cases["partial"] = second
    # MAP landmark format instead of IBL: siteInfo.mat (one site without a region) + track CSV
    folder = new / other[0] / other[1]
    s, p, h = probes[other]
    originals = [json.loads((root / h["1"]["channel_locations"]).read_text())]
    shutil.rmtree(folder / f"probe{other[2]}")
    stem = f"landmarks_{other[0]}_{other[1][:8]}_{other[2]}"
    (folder / "histology").mkdir()
    order = _write_site_info(folder / "histology" / f"{stem}_siteInfo.mat", p, originals, manifest, invalid=5)
    picks = json.loads((root / h["1"]["xyz_picks"]).read_text())["xyz_picks"]
    lines = ["pt-1,true,1,2,3,4,5,6"] + [f"pt-{i + 2},false,0,0,0," + ",".join(f"{v:.2f}" for v in to_ccf(manifest, *pt))
                                         for i, pt in enumerate(picks)]
    (folder / "histology" / f"{stem}.csv").write_text("\n".join(lines) + "\n")
    cases["map"] = other

    wipe_histology(modules)
    use_share_paths({"paths": {**manifest["paths"], "histology_data_paths": [["RRig", str(new), 0]]}})
    share.scan(["histology"])
    summary = run_ingest(ingest_histology.HistologyIngest, progress=False)
    errors = {(r["water_restriction_number"], r["session_date"].strftime("%Y%m%d") + (f"_{r['day_index']}" if r["day_index"] else ""),
               r["histology_probe"]): r["error_message"]
              for r in ingest_histology.HistologyIngest().jobs.errors.to_dicts()}
    yield {**ingested, "summary": summary, "errors": errors, "cases": cases, "probes": probes, "dropped": dropped,
           "map_order": order, "picks": picks}
    wipe_histology(modules)
    use_share_paths(manifest)


def test_broken_histology_fails_its_insertion_with_a_clear_message(broken):
    histology = broken["modules"]["histology"]
    errors, cases = broken["errors"], broken["cases"]
    assert broken["summary"].failed == 3 and broken["summary"].inserted == 2
    assert set(errors) == {cases["far"], cases["shank"], cases["no_probe"]}
    far = errors[cases["far"]]
    assert re.search(r"probe1/channel_locations_shank1.json: 1[0-9] of 16 positions lie more than 1000 um outside the "
                     r"hist_sim100 atlas, e.g. channel_0 at CCF AP \d+, DV -\d+", far)
    shank = errors[cases["shank"]]
    assert "channel_locations_shank5.json: shank 5, but probe 2 is a neuropixels 2.0 - MS with 4 shank(s)" in shank
    no_probe = errors[cases["no_probe"]]
    assert "histology for probe 2, but session 2 of dl30" in no_probe and "its probes: 1" in no_probe
    # nothing of a failed insertion was kept
    for case in ("far", "shank"):
        s, p, _ = broken["probes"][cases[case]]
        assert not (histology.ElectrodeCCFPosition & ikey(s, p)) and not (histology.LabeledProbeTrack & ikey(s, p))


def test_missing_channels_are_interpolated_and_lifted_one_is_outside_the_brain(broken):
    manifest = broken["manifest"]
    histology, ccf = broken["modules"]["histology"], broken["modules"]["ccf"]
    s, p, h = broken["probes"][broken["cases"]["partial"]]
    key = ikey(s, p)
    assert len(histology.ElectrodeCCFPosition.ElectrodePosition & key) == 13
    error = (histology.ElectrodeCCFPosition.ElectrodePositionError & key).fetch1()
    assert error["electrode"] == expected_electrode(p, 15) and error["position_error"] == "outside the brain (unlabelled voxel)"
    interpolated = {r["electrode"]: r for r in (histology.InterpolatedShankTrack.Electrode * ccf.CCFBrainRegion.proj("acronym")
                                                & key).to_dicts()}
    assert set(interpolated) == {expected_electrode(p, 3), expected_electrode(p, 7)}
    for channel, truth in broken["dropped"].items():
        r = interpolated[expected_electrode(p, channel)]
        ml, dv, ap = to_ccf(manifest, truth["x"], truth["y"], truth["z"])
        # straight probe: AP and DV exact along the shank; ML within the column spacing (the fit ignores columns)
        assert abs(r["ccf_z"] - ap) < 0.01 and abs(r["ccf_y"] - dv) < 0.01 and abs(r["ccf_x"] - ml) <= 32
        assert r["acronym"] == h["1"]["regions"][str(channel)]
    sources = dict(zip(*(histology.UnitCCF & key).to_arrays("unit", "position_source")))
    for u in p["units"]:
        unit = u["cluster_id"] + 1 if p["sorter"] == "jrclust_v4" else u["cluster_id"]
        expect = {3: "interpolated", 7: "interpolated", 15: "outside_atlas"}.get(u["peak_channel"], "measured")
        assert sources[unit] == expect


def test_map_landmark_files(broken):
    manifest = broken["manifest"]
    histology, ccf = broken["modules"]["histology"], broken["modules"]["ccf"]
    s, p, h = broken["probes"][broken["cases"]["map"]]
    key = ikey(s, p)
    assert (histology.ElectrodeCCFPosition & key).fetch1("track_source") == "map_landmarks"
    rows = {r["electrode"]: r for r in (histology.ElectrodeCCFPosition.ElectrodePosition * ccf.CCFBrainRegion.proj("acronym")
                                       & key).to_dicts()}
    order = broken["map_order"]
    assert set(rows) == {expected_electrode(p, c) for i, c in enumerate(order) if i != 5}
    for channel, acronym in h["1"]["regions"].items():
        e = expected_electrode(p, int(channel))
        if e in rows:
            assert rows[e]["acronym"] == acronym
    skipped = (histology.InterpolatedShankTrack.Electrode & key).fetch1()
    assert skipped["electrode"] == expected_electrode(p, order[5])
    points = (histology.LabeledProbeTrack.Point & key).to_dicts()
    assert [r["order"] for r in points] == list(range(5))
    first = to_ccf(manifest, *broken["picks"][0])
    assert np.allclose([points[0]["ccf_x"], points[0]["ccf_y"], points[0]["ccf_z"]], first, atol=0.01)


def test_reader_errors_name_the_file(tmp_path):
    from ingest.readers.errors import ReaderError
    from ingest.readers.histology import ibl_to_ccf, read_channel_locations, read_xyz_picks

    bad = tmp_path / "channel_locations_shank1.json"
    bad.write_text('{"channel_0": {"x": 1, "y": 2}}')
    with pytest.raises(ReaderError, match=r"channel_locations_shank1.json: channel_0 has no z"):
        read_channel_locations(bad)
    bad.write_text('{"channel_0": {"x": 1, "y": 2, "z": "deep"}}')
    with pytest.raises(ReaderError, match=r"channel_0.z is 'deep', not a finite number"):
        read_channel_locations(bad)
    bad.write_text("{not json")
    with pytest.raises(ReaderError, match="not valid JSON"):
        read_channel_locations(bad)
    picks = tmp_path / "xyz_picks.json"
    picks.write_text('{"xyz_picks": [[1, 2]]}')
    with pytest.raises(ReaderError, match=r"xyz_picks\[0\] is \[1, 2\], not \[x, y, z\]"):
        read_xyz_picks(picks)
    # the transform, against the simulator's own voxel lookup convention
    x, y, z = -1405.0, 2454.7, -2000.0
    ap, dv, ml = ibl_to_ccf([[x, y, z]])[0]
    assert tuple(int(np.floor(v / sim_ccf.RES + 0.5)) for v in (ap, dv, ml)) == sim_ccf.to_voxel(x, y, z)

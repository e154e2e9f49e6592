"""Allen CCF: readers on the simulator's volume and broken files; load, region lookups, region voxels."""

from __future__ import annotations

import json

import nrrd
import numpy as np
import pytest

from ingest.readers import ccf as reader
from ingest.readers.errors import ReaderError
from ingest.simulator import ccf as sim_ccf
from ingest.simulator import simulate_share

VERSION = "test_sim100"


@pytest.fixture(scope="module")
def share(tmp_path_factory):
    root = tmp_path_factory.mktemp("ccf_share")
    manifest = simulate_share(root, scale="tiny")
    entry = manifest["ccf"]
    volume, _ = nrrd.read(str(root / entry["annotation"]))
    return {"root": root, "nrrd": root / entry["annotation"], "ontology": root / entry["ontology"],
            "manifest": entry, "volume": volume}


def _drop(ccf, *names):
    for name in names:
        (ccf.AnnotationVersion & {"annotation_version": name}).delete(prompt=False)


@pytest.fixture(scope="module")
def loaded(modules, share):
    ccf = modules["ccf"]
    _drop(ccf, VERSION)
    summary = ccf.load_ccf(share["nrrd"], share["ontology"], version_name=VERSION, resolution=100)
    yield ccf, summary
    _drop(ccf, VERSION)
    assert not (ccf.CCFBrainRegion & {"annotation_version": VERSION})


@pytest.fixture
def scratch_versions(modules):
    """Version names a test may create; deleted (with everything below them) afterwards."""
    names: list[str] = []
    yield names
    _drop(modules["ccf"], *names)


def _descendant_ids(ontology, acronym):
    return ontology.descendant_ids(ontology.by_acronym[acronym].id)


# --- readers ------------------------------------------------------------------------------------

def test_nrrd_reader_streams_what_pynrrd_reads(share):
    info = reader.read_nrrd_header(share["nrrd"])
    assert info.shape == tuple(share["manifest"]["shape"]) == (132, 80, 114)
    assert info.resolution_um == 100.0 and info.encoding == "gzip" and info.dtype == np.uint32
    slabs = list(reader.iter_nrrd_slabs(info, 7))
    assert [s for s, _ in slabs] == list(range(0, 114, 7))
    assert [a.shape[2] for _, a in slabs][-1] == 114 - 16 * 7
    assert np.array_equal(np.concatenate([a for _, a in slabs], axis=2), share["volume"])
    assert np.array_equal(reader.read_volume(share["nrrd"]), share["volume"])
    labels = sorted(np.unique(share["volume"]).tolist())
    assert labels == share["manifest"]["labels"] == [0, 322, 382, 672, 985, 993, 997, 1009]


def test_nrrd_reader_raw_and_bzip2_and_truncated(share, tmp_path):
    vol = share["volume"]
    for encoding in ("raw", "bzip2"):
        path = tmp_path / f"v_{encoding}.nrrd"
        nrrd.write(str(path), vol.astype(np.int32), {"encoding": encoding})
        assert np.array_equal(reader.read_volume(path), vol)
    raw = tmp_path / "v_raw.nrrd"
    cut = tmp_path / "truncated.nrrd"
    cut.write_bytes(raw.read_bytes()[:-1000])
    with pytest.raises(ReaderError, match=r"ends after \d+ of 1203840 voxels") as err:
        reader.read_volume(cut)
    assert err.value.path == cut
    text = tmp_path / "text.nrrd"
    text.write_text("hello\n")
    with pytest.raises(ReaderError, match="not a readable NRRD header"):
        reader.read_nrrd_header(text)


def test_ontology_reader(share):
    onto = reader.read_ontology(share["ontology"])
    assert len(onto) == len(sim_ccf.ONTOLOGY) == 20
    mos = onto.by_acronym["MOs"]
    assert (mos.id, mos.name, mos.parent_id, mos.depth, mos.color) == (993, "Secondary motor area", 500, 7, "1F9D5A")
    assert onto.by_id[997].parent_id is None and onto.by_id[997].depth == 0
    assert sorted(onto.by_id[i].acronym for i in _descendant_ids(onto, "MO")) == ["MO", "MOp", "MOs"]
    assert onto.by_acronym["CA"].name == "Ammon's horn"


def _rewrite_csv(share, tmp_path, edit):
    lines = share["ontology"].read_text().splitlines()
    path = tmp_path / "ontology.csv"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def test_ontology_reader_rejects_broken_csv(share, tmp_path):
    no_color = _rewrite_csv(share, tmp_path, lambda ls: [",".join(l.split(",")[:-1]) for l in ls])
    with pytest.raises(ReaderError, match="missing column.*color_hex_triplet") as err:
        reader.read_ontology(no_color)
    assert err.value.path == no_color
    orphan = _rewrite_csv(share, tmp_path, lambda ls: [l for l in ls if not l.startswith("500,")])
    with pytest.raises(ReaderError, match=r"structure_id_path of MOp \(id 985\) names id\(s\) 500 that have no row"):
        reader.read_ontology(orphan)
    bad_id = _rewrite_csv(share, tmp_path, lambda ls: ls[:1] + ["x" + ls[1]] + ls[2:])
    with pytest.raises(ReaderError, match="line 2: id 'x997' is not an integer"):
        reader.read_ontology(bad_id)
    twice = _rewrite_csv(share, tmp_path, lambda ls: ls + [ls[-1]])
    with pytest.raises(ReaderError, match="id 1009 repeats line 21"):
        reader.read_ontology(twice)


# --- load ---------------------------------------------------------------------------------------

def test_load_stores_version_regions_chunks_and_runs(loaded, share):
    ccf, summary = loaded
    vol = share["volume"]
    assert summary.inserted and summary.shape == (132, 80, 114) and summary.resolution == 100
    assert summary.rows == {"AnnotationVersion": 1, "CCFBrainRegion": 20, "AnnotationChunk": 3 * 2 * 8,
                            "RegionVoxels": 7}
    assert summary.labelled_voxels == int((vol != 0).sum())
    version = (ccf.AnnotationVersion & {"annotation_version": VERSION}).fetch1()
    assert version["source_md5"] == reader.file_md5(share["nrrd"])
    assert version["ccf_label_id"] is None  # there is no 100 um CCFLabel
    assert (version["source_file"], version["ontology_file"]) == ("annotation_100.nrrd", "ontology.csv")
    rows = (ccf.RegionVoxels & {"annotation_version": VERSION}).to_dicts()
    assert {r["region_id"] for r in rows} == set(share["manifest"]["labels"]) - {0}
    for r in rows:
        where = np.argwhere(vol == r["region_id"])
        assert r["voxel_count"] == len(where)
        assert (r["ap_min"], r["dv_min"], r["ml_min"]) == tuple(where.min(axis=0))
        assert (r["ap_max"], r["dv_max"], r["ml_max"]) == tuple(where.max(axis=0))
    chunk = (ccf.AnnotationChunk & {"annotation_version": VERSION, "chunk_id": (0 * 2 + 1) * 8 + 3}).fetch1()
    assert (chunk["ap0"], chunk["dv0"], chunk["ml0"]) == (0, 64, 48)
    assert np.array_equal(chunk["labels"], vol[0:64, 64:80, 48:64])


def test_loading_twice_inserts_nothing(loaded, share, tmp_path):
    ccf, _ = loaded
    tables = (ccf.AnnotationVersion, ccf.CCFBrainRegion, ccf.AnnotationChunk, ccf.RegionVoxels)
    before = [len(t & {"annotation_version": VERSION}) for t in tables]
    again = ccf.load_ccf(share["nrrd"], share["ontology"], version_name=VERSION, resolution=100)
    assert not again.inserted and again.labelled_voxels == int((share["volume"] != 0).sum())
    assert [len(t & {"annotation_version": VERSION}) for t in tables] == before == [1, 20, 48, 7]
    other = tmp_path / "annotation_100.nrrd"
    changed = share["volume"].copy()
    changed[0, 0, 0] = 997
    nrrd.write(str(other), changed, {"encoding": "gzip", "space directions": np.eye(3) * 100})
    with pytest.raises(ccf.CCFError, match="already loaded from annotation_100.nrrd.*differ"):
        ccf.load_ccf(other, share["ontology"], version_name=VERSION)
    assert [len(t & {"annotation_version": VERSION}) for t in tables] == before


def test_label_missing_from_ontology_is_a_clear_error_and_loads_nothing(modules, share, tmp_path, scratch_versions):
    ccf = modules["ccf"]
    scratch_versions.append("test_no_cp")
    no_cp = _rewrite_csv(share, tmp_path, lambda ls: [l for l in ls if not l.startswith("672,")])
    with pytest.raises(ReaderError) as err:
        ccf.load_ccf(share["nrrd"], no_cp, version_name="test_no_cp")
    message = str(err.value)
    assert err.value.path == share["nrrd"]
    assert "voxel label 672" in message and str(no_cp) in message and "is not in the ontology" in message
    ap, dv, ml = (int(v) for v in message.split("(AP, DV, ML) (")[1].split(")")[0].split(", "))
    assert share["volume"][ap, dv, ml] == 672
    assert not (ccf.AnnotationVersion & {"annotation_version": "test_no_cp"})
    assert not (ccf.CCFBrainRegion & {"annotation_version": "test_no_cp"})
    assert not (ccf.AnnotationChunk & {"annotation_version": "test_no_cp"})


def test_broken_inputs_to_load(modules, share, tmp_path, scratch_versions):
    ccf = modules["ccf"]
    scratch_versions.append("test_broken")
    no_column = _rewrite_csv(share, tmp_path, lambda ls: [",".join(l.split(",")[:-1]) for l in ls])
    with pytest.raises(ReaderError, match="missing column"):
        ccf.load_ccf(share["nrrd"], no_column, version_name="test_broken")
    with pytest.raises(ReaderError, match="resolution 25 um given, but the header's space directions say 100 um"):
        ccf.load_ccf(share["nrrd"], share["ontology"], version_name="test_broken", resolution=25)
    with pytest.raises(ReaderError, match="cannot read NRRD"):
        ccf.load_ccf(tmp_path / "absent.nrrd", share["ontology"], version_name="test_broken")
    assert not (ccf.AnnotationVersion & {"annotation_version": "test_broken"})


# --- lookups ------------------------------------------------------------------------------------

def test_region_at_known_voxels(loaded, share):
    ccf, _ = loaded
    vol = share["volume"]
    rng = np.random.default_rng(7)
    idx = np.stack([rng.integers(0, n, 5000) for n in vol.shape], axis=1)
    for label in share["manifest"]["labels"]:  # at least one voxel of every label
        idx = np.vstack([idx, np.argwhere(vol == label)[:3]])
    jitter = rng.uniform(-49, 49, idx.shape)
    got = ccf.region_at(idx * 100.0 + jitter, version=VERSION)
    assert got.dtype == np.int64
    assert np.array_equal(got, vol[idx[:, 0], idx[:, 1], idx[:, 2]])
    assert set(got.tolist()) == set(share["manifest"]["labels"])
    names = ccf.region_at(idx * 100.0, version=VERSION, acronyms=True)
    expect = [sim_ccf.ACRONYM[v] if v else None for v in vol[idx[:, 0], idx[:, 1], idx[:, 2]]]
    assert names.tolist() == expect
    # the simulator's own bregma-relative lookup agrees (ap = 5400 - y, dv = 332 - z, ml = x + 5739)
    for x, y, z in [(-1500.0, 2500.0, -400.0), (1200.0, -2600.0, -1800.0), (300.0, 0.0, -3500.0)]:
        ours = ccf.region_at([[5400 - y, 332 - z, x + 5739]], version=VERSION)
        assert ours.tolist() == [sim_ccf.region_at(x, y, z)]
    assert ccf.region_at(np.zeros((0, 3)), version=VERSION).shape == (0,)


def test_region_at_outside_the_volume(loaded):
    ccf, _ = loaded
    inside = [[100.0, 100.0, 100.0]]
    assert ccf.region_at(inside, version=VERSION).tolist() == [0]
    with pytest.raises(ccf.CCFCoordinateError, match=r"1 of 2 coordinate\(s\) are outside the test_sim100 volume.*"
                                                     r"AP \[-50, 13150\).*row 1: \[13200.0, 0.0, 0.0\]"):
        ccf.region_at(inside + [[13200.0, 0.0, 0.0]], version=VERSION)
    with pytest.raises(ccf.CCFCoordinateError, match="outside"):
        ccf.region_at([[-51.0, 10.0, 10.0]], version=VERSION)
    with pytest.raises(ccf.CCFCoordinateError, match="outside"):
        ccf.region_at([[np.nan, 10.0, 10.0]], version=VERSION)
    with pytest.raises(ccf.CCFCoordinateError, match=r"\(n, 3\)"):
        ccf.region_at([[1.0, 2.0]], version=VERSION)
    with pytest.raises(ccf.CCFError, match="'no_such_version' is not loaded"):
        ccf.region_at(inside, version="no_such_version")


def test_descendants_and_map_query_shapes(loaded, share):
    ccf, _ = loaded
    onto = reader.read_ontology(share["ontology"])
    assert ccf.descendants("MO", version=VERSION) == ["MOp", "MOs"]
    assert ccf.descendants("CA1", version=VERSION) == []
    assert ccf.descendants("STR", version=VERSION, include_self=True) == ["STR", "STRd", "CP"]
    ctx = {onto.by_id[i].acronym for i in _descendant_ids(onto, "CTX")} - {"CTX"}
    assert set(ccf.descendants("CTX", version=VERSION)) == ctx and len(ctx) == 11
    assert len(ccf.descendants("root", version=VERSION)) == 19
    mos = (ccf.CCFBrainRegion & {"annotation_version": VERSION} & "acronym = 'MOs'").fetch1()
    assert (mos["region_id"], mos["color_code"], mos["parent_id"]) == (993, "1F9D5A", 500)
    children = ccf.CCFBrainRegion & {"annotation_version": VERSION} & "parent_id = 500"
    assert sorted(children.to_arrays("acronym").tolist()) == ["MOp", "MOs"]
    under_ch = ccf.CCFBrainRegion & {"annotation_version": VERSION} & "structure_id_path LIKE '/997/8/567/%'"
    assert len(under_ch) == 17
    with pytest.raises(ccf.CCFError, match="no region with acronym 'ALM'"):
        ccf.descendants("ALM", version=VERSION)


def test_region_voxels_equal_numpy(loaded, share):
    ccf, _ = loaded
    vol = share["volume"]
    onto = reader.read_ontology(share["ontology"])
    for acronym in ("MOs", "MO", "CTX", "HPF", "CH", "root", "fiber tracts", "grey"):
        expect = np.argwhere(np.isin(vol, _descendant_ids(onto, acronym)))
        got = ccf.region_voxels(acronym, version=VERSION)
        assert got.shape == expect.shape and np.array_equal(got, expect), acronym
    only_root = ccf.region_voxels("root", version=VERSION, include_descendants=False)
    assert np.array_equal(only_root, np.argwhere(vol == 997)) and len(only_root) > 0
    assert len(ccf.region_voxels("CTX", version=VERSION, include_descendants=False)) == 0
    um = ccf.region_voxels("CA1", version=VERSION, units="um")
    assert np.array_equal(um, np.argwhere(vol == 382) * 100.0)
    # MAP's shape: the annotation restricted by region
    mos = ccf.CCFBrainRegion & {"annotation_version": VERSION} & "acronym = 'MOs'"
    assert np.array_equal((ccf.CCFAnnotation & mos).voxels(), np.argwhere(vol == 993))
    assert (ccf.CCFAnnotation & mos).fetch1("voxel_count") == int((vol == 993).sum()) == 27226


# --- mapshell -----------------------------------------------------------------------------------

@pytest.fixture
def shell_registry():
    """mapshell's commands, as a user's mapshell has them (load-ccf is one of its plugins)."""
    from pipeline import ccf_commands, shell

    shell.build_parser()
    return ccf_commands


def test_mapshell_load_ccf(loaded, share, tmp_path, capsys, scratch_versions, shell_registry):
    ccf, _ = loaded
    ccf_commands = shell_registry
    from pipeline import config
    from pipeline.shell import COMMANDS, main

    assert "load-ccf" in COMMANDS
    scratch_versions.append("test_cli")
    args = ["load-ccf", "--nrrd", str(share["nrrd"]), "--ontology", str(share["ontology"]), "--version", "test_cli"]
    assert main(args) == 0
    assert "test_cli: loaded: 132 x 80 x 114 voxels at 100 um, 20 regions (7 labelled)" in capsys.readouterr().out
    assert main(args) == 0
    assert "test_cli: already loaded (nothing inserted)" in capsys.readouterr().out
    assert len(ccf.AnnotationChunk & {"annotation_version": "test_cli"}) == 48
    broken = _rewrite_csv(share, tmp_path, lambda ls: [",".join(l.split(",")[:-1]) for l in ls])
    assert main(["load-ccf", "--nrrd", str(share["nrrd"]), "--ontology", str(broken), "--version", "test_cli2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing column(s) color_hex_triplet" in err[0] and err[0].startswith("mapshell load-ccf: error:")
    # defaults come from ccf_data_paths: annotation_<res>.nrrd + ontology.csv, version <name>_<res>um
    conf = tmp_path / "dj_local_conf.json"
    conf.write_text(json.dumps({"custom": {"ccf_data_paths": [["CCFsim", str(share["nrrd"].parent), 0]]}}))
    entries = config.load_config(conf, environ={}, check_paths=False).data_paths("ccf_data_paths")
    sources = ccf_commands.default_sources(entries)
    assert sources == [ccf_commands.Source(share["nrrd"], share["ontology"], "CCFsim_100um", 100)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="no annotation_<resolution>.nrrd here"):
        ccf_commands.default_sources([("empty", tmp_path / "empty", 0)])

"""Benchmark the CCF load and lookups on a full-size synthetic 25 um atlas (528 x 320 x 456 uint32).

    DJ_HOST=127.0.0.1 DJ_USER=root /work/venv/bin/python bench/bench_ccf.py [--workdir DIR] [--keep]

Synthesizes (deterministic seed) an ontology of 441 structures (root > 8 > 48 > 384 leaves) and
a volume of nested blobs (leaf Voronoi cells around seeds clustered by parent, with wavy
boundaries, inside an ellipsoid brain), writes it as a gzip NRRD like Allen's, then times:

* load: wall time and peak memory, in a fresh child process (peak RSS, VmHWM, and how far it
  rose above the process's level after importing and connecting) and again in-process under tracemalloc;
* region lookup for 100,000 random coordinates, and for one 384-point probe track;
* fetching one large region's voxels (a level-1 structure with its descendants) and one leaf's.

Results are checked against the in-memory volume, printed, and written to bench/results/ccf.json.
Uses its own schema prefix (bench_ccf_) and drops its schema at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("MAP_DB_PREFIX", "bench_ccf_")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SHAPE = (528, 320, 456)
RES = 25
SEED = 20240601
VERSION = "bench_25um"


def synth_ontology(rng: np.random.Generator) -> list[tuple[int, str, str, str, str, int]]:
    """(id, acronym, name, path, colour, level) rows: root, 8 areas, 48 subareas, 384 leaves."""
    rows = [(997, "root", "root", "/997/", "FFFFFF", 0)]
    next_id = 1000
    for a in range(8):
        aid, next_id = next_id, next_id + 1
        apath = f"/997/{aid}/"
        rows.append((aid, f"A{a}", f"Area {a}", apath, "%06X" % rng.integers(0, 1 << 24), 1))
        for b in range(6):
            bid, next_id = next_id, next_id + 1
            bpath = f"{apath}{bid}/"
            rows.append((bid, f"A{a}B{b}", f"Area {a} part {b}", bpath, "%06X" % rng.integers(0, 1 << 24), 2))
            for c in range(8):
                cid, next_id = next_id, next_id + 1
                rows.append((cid, f"A{a}B{b}L{c}", f"Area {a} part {b}, layer {c}", f"{bpath}{cid}/",
                             "%06X" % rng.integers(0, 1 << 24), 3))
    return rows


def synth_volume(rows, rng: np.random.Generator) -> np.ndarray:
    from scipy.spatial import cKDTree

    center = np.array(SHAPE) / 2.0
    radii = np.array(SHAPE) * 0.46
    areas = [r for r in rows if r[5] == 1]
    seeds, labels = [], []
    for a in areas:
        ac = center + rng.uniform(-0.6, 0.6, 3) * radii
        for b in (r for r in rows if r[5] == 2 and r[3].startswith(a[3])):
            bc = ac + rng.normal(0, 40, 3)
            for c in (r for r in rows if r[5] == 3 and r[3].startswith(b[3])):
                seeds.append(bc + rng.normal(0, 18, 3))
                labels.append(c[0])
    tree = cKDTree(np.array(seeds))
    labels = np.array(labels, dtype=np.uint32)
    vol = np.zeros(SHAPE, dtype=np.uint32, order="F")
    ap, dv = np.meshgrid(np.arange(SHAPE[0], dtype=float), np.arange(SHAPE[1], dtype=float), indexing="ij")
    for ml in range(SHAPE[2]):  # plane by plane: bounded memory, wavy boundaries
        wob = 6 * np.sin(ap / 23.0 + ml / 31.0) + 5 * np.cos(dv / 17.0 - ml / 29.0)
        pts = np.stack([ap + wob, dv - wob, np.full_like(ap, ml) + 0.7 * wob], axis=-1).reshape(-1, 3)
        inside = (((np.stack([ap, dv, np.full_like(ap, ml)], -1) - center) / radii) ** 2).sum(-1).ravel() <= 1
        plane = np.zeros(ap.size, dtype=np.uint32)
        if inside.any():
            _, nearest = tree.query(pts[inside], workers=-1)
            plane[inside] = labels[nearest]
        vol[:, :, ml] = plane.reshape(ap.shape)
    return vol


def write_inputs(workdir: Path) -> tuple[Path, Path, np.ndarray, list]:
    import nrrd

    rng = np.random.default_rng(SEED)
    rows = synth_ontology(rng)
    vol = synth_volume(rows, rng)
    nrrd_path = workdir / f"annotation_{RES}.nrrd"
    nrrd.write(str(nrrd_path), vol, {"space": "left-posterior-superior", "kinds": ["domain"] * 3,
                                     "space directions": np.eye(3) * RES, "encoding": "gzip"})
    csv_path = workdir / "ontology.csv"
    lines = ["id,acronym,name,structure_id_path,color_hex_triplet"]
    lines += [f'{i},{acr},"{name}",{path},{col}' for i, acr, name, path, col, _ in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    return nrrd_path, csv_path, vol, rows


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's peak,
    which Linux carries across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_load(nrrd_path: str, csv_path: str) -> None:
    """Run in a fresh process: one timed load, peak RSS before and after."""
    from pipeline import ccf

    base = peak_rss_kb()
    t0 = time.perf_counter()
    summary = ccf.load_ccf(nrrd_path, csv_path, version_name=VERSION, resolution=RES)
    wall = time.perf_counter() - t0
    peak = peak_rss_kb()
    print(json.dumps({"wall_s": wall, "maxrss_mb": peak / 1024, "maxrss_before_load_mb": base / 1024,
                      "inserted": summary.inserted, "rows": summary.rows, "summary": str(summary)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to write the synthetic NRRD (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the schema (default: drop it)")
    parser.add_argument("--child-load", nargs=2, metavar=("NRRD", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load:
        child_load(*args.child_load)
        return 0

    import datajoint as dj

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ccf-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    nrrd_path, csv_path, vol, rows = write_inputs(workdir)
    synth_s = time.perf_counter() - t0
    n_labels = len(np.unique(vol)) - 1
    print(f"synthesized {SHAPE} uint32 at {RES} um: {n_labels} labels, {len(rows)} ontology rows, "
          f"{nrrd_path.stat().st_size / 1e6:.1f} MB gzip NRRD in {synth_s:.1f} s")

    from pipeline import ccf, db

    results: dict = {"backend": db.backend(), "shape": list(SHAPE), "resolution_um": RES, "labels": int(n_labels),
                     "ontology_rows": len(rows), "nrrd_mb": round(nrrd_path.stat().st_size / 1e6, 2)}
    dj.config["safemode"] = False
    try:
        (ccf.AnnotationVersion & {"annotation_version": VERSION}).delete(prompt=False)
        # 1. timed load in a fresh process (its own peak RSS)
        out = subprocess.run([sys.executable, __file__, "--child-load", str(nrrd_path), str(csv_path)],
                             capture_output=True, text=True, env=os.environ.copy(), check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        print(child["summary"])
        results["load_wall_s"] = round(child["wall_s"], 2)
        results["load_process_maxrss_mb"] = round(child["maxrss_mb"], 1)
        results["load_maxrss_above_baseline_mb"] = round(child["maxrss_mb"] - child["maxrss_before_load_mb"], 1)
        results["rows"] = child["rows"]
        print(f"load: {child['wall_s']:.2f} s wall; child process peak RSS {child['maxrss_mb']:.0f} MB "
              f"({child['maxrss_mb'] - child['maxrss_before_load_mb']:.0f} MB above its level before the load; "
              f"the volume itself is {vol.nbytes / 1e6:.0f} MB as uint32)")

        # 2. loading again inserts nothing
        t = time.perf_counter()
        again = ccf.load_ccf(nrrd_path, csv_path, version_name=VERSION, resolution=RES)
        results["reload_s"] = round(time.perf_counter() - t, 2)
        assert not again.inserted
        print(f"second load of the same files: nothing inserted, {results['reload_s']:.2f} s (md5 + check)")

        # 3. lookups: 100,000 random coordinates
        rng = np.random.default_rng(SEED + 1)
        coords = rng.uniform(0, 1, (100_000, 3)) * (np.array(SHAPE) - 1) * RES
        t = time.perf_counter()
        got = ccf.region_at(coords, version=VERSION)
        lookup_s = time.perf_counter() - t
        idx = np.floor(coords / RES + 0.5).astype(int)
        assert np.array_equal(got, vol[idx[:, 0], idx[:, 1], idx[:, 2]])
        results["lookup_100k_s"] = round(lookup_s, 3)
        print(f"region_at, 100,000 random coordinates: {lookup_s:.2f} s ({1e6 * lookup_s / 1e5:.1f} us each); "
              f"matches the volume")
        track = np.linspace([5000, 500, 5000], [6000, 6500, 5400], 384)
        t = time.perf_counter()
        got = ccf.region_at(track, version=VERSION)
        results["lookup_probe_track_384_s"] = round(time.perf_counter() - t, 3)
        idx = np.floor(track / RES + 0.5).astype(int)
        assert np.array_equal(got, vol[idx[:, 0], idx[:, 1], idx[:, 2]])
        print(f"region_at, one 384-point probe track: {results['lookup_probe_track_384_s'] * 1000:.0f} ms")

        # 4. one large region (a level-1 area with its 54 descendants) and one leaf
        ids_of = {r[1]: r[0] for r in rows}
        areas = [r for r in rows if r[5] == 1]
        sizes = {a[1]: int(np.isin(vol, [r[0] for r in rows if r[3].startswith(a[3])]).sum()) for a in areas}
        big = max(sizes, key=sizes.get)
        t = time.perf_counter()
        vox = ccf.region_voxels(big, version=VERSION)
        big_s = time.perf_counter() - t
        expect = np.argwhere(np.isin(vol, [r[0] for r in rows if r[3].startswith(dict((r[1], r[3]) for r in rows)[big])]))
        assert np.array_equal(vox, expect)
        results["region_voxels_large"] = {"acronym": big, "descendants": len(ccf.descendants(big, version=VERSION)),
                                          "voxels": int(len(vox)), "s": round(big_s, 3)}
        print(f"region_voxels('{big}') with {results['region_voxels_large']['descendants']} descendants: "
              f"{len(vox):,} voxels in {big_s:.2f} s; equals np.argwhere(np.isin(volume, ids))")
        leaf = f"{big}B0L0"
        t = time.perf_counter()
        vox = ccf.region_voxels(leaf, version=VERSION)
        leaf_s = time.perf_counter() - t
        assert np.array_equal(vox, np.argwhere(vol == ids_of[leaf]))
        results["region_voxels_leaf"] = {"acronym": leaf, "voxels": int(len(vox)), "s": round(leaf_s, 3)}
        print(f"region_voxels('{leaf}'): {len(vox):,} voxels in {leaf_s:.3f} s")

        # 5. stored size
        conn = ccf.schema.connection
        fn = "LENGTH" if db.backend() != "postgresql" else "OCTET_LENGTH"
        chunk_bytes = conn.query(f"SELECT SUM({fn}(labels)) FROM {ccf.AnnotationChunk.full_table_name}").fetchone()[0]
        run_bytes = conn.query(f"SELECT SUM({fn}(run_starts) + {fn}(run_lengths)) FROM "
                               f"{ccf.RegionVoxels.full_table_name}").fetchone()[0]
        results["stored_mb"] = {"chunks": round(float(chunk_bytes) / 1e6, 2), "region_runs": round(float(run_bytes) / 1e6, 2)}
        print(f"stored blobs: chunks {float(chunk_bytes) / 1e6:.1f} MB, region runs {float(run_bytes) / 1e6:.1f} MB")

        # 6. in-process load under tracemalloc (peak of Python + numpy allocations during the load)
        (ccf.AnnotationVersion & {"annotation_version": VERSION}).delete(prompt=False)
        del vol, got, vox, expect
        tracemalloc.start()
        t = time.perf_counter()
        ccf.load_ccf(nrrd_path, csv_path, version_name=VERSION, resolution=RES)
        traced_s = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results["load_tracemalloc_peak_mb"] = round(peak / 1e6, 1)
        results["load_under_tracemalloc_s"] = round(traced_s, 2)
        print(f"load under tracemalloc: peak traced {peak / 1e6:.0f} MB ({traced_s:.1f} s with tracing on)")
    finally:
        if not args.keep:
            ccf.schema.drop(prompt=False)
            print(f"dropped schema {ccf.schema.database}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ccf.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_dir / 'ccf.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

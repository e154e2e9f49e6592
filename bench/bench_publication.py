"""Benchmark publish and retrieve on the local endpoint against ``cp`` + ``md5sum``.

    DJ_HOST=127.0.0.1 DJ_USER=root /work/venv/bin/python bench/bench_publication.py [--workdir DIR] [--scale bench|small] [--keep]

Simulates the bench share (one session, ~3 GB; its .ap.bin is ~2.7 GB) unless ``--workdir``
already holds one, loads its subjects, scans and ingests the behaviour session, then times on the
session's raw ephys files (what publish archives):

* baseline: ``cp`` of every file into a fresh folder, then ``md5sum`` of the same files;
* publish: ``ArchivedRawEphys`` populate = MD5 of every file, one local-endpoint task (copy with
  MD5 verified in the same pass, fsync, rename), wait, record;
* retrieve: the archived data set back to a fresh folder under the local endpoint path, with the
  task's checksum verification and the MD5 check of every retrieved file.

The files are read once before timing, so every figure is with a warm page cache. Throughput is
bytes of the files / wall time; the target is >= 0.7 x the baseline. Results are printed and
written to bench/results/publication.json. Uses its own schema prefix and drops its schemas.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MAP_DB_PREFIX", f"bench_pub{os.getpid()}_")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEP, ARCH = "bench-local-endpoint", "bench-archive"


def configure(share: Path, work: Path, manifest: dict) -> None:
    conf = work / "dj_local_conf.json"
    custom = dict(manifest["paths"])
    custom.update({
        "globus.backend": "local",
        "globus.storage_locations": {"raw-ephys": {"endpoint": ARCH, "root": "/4ElectrodeRig_Ephys"},
                                     "raw-video": {"endpoint": ARCH, "root": "/video"}},
        "globus.local_endpoint": LEP, "globus.local_endpoint_subdir": "",
        "globus.local_endpoint_local_path": str(share),
        "globus.local_collections": {LEP: str(share), ARCH: str(work / "archive")},
        "globus.local_state_dir": str(work / "tasks"),
    })
    conf.write_text(json.dumps({"safemode": False, "custom": custom}))
    os.environ["MAP_CONFIG"] = str(conf)


def drop_schemas(prefix: str) -> list[str]:
    from pipeline import db

    return db.drop_schemas(prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="folder for the share, archive and copies (default: a temp dir, removed)")
    parser.add_argument("--scale", choices=("bench", "small"), default="bench")
    parser.add_argument("--keep", action="store_true", help="keep the schemas and files")
    args = parser.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-pub-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    share = work / "share"
    for d in ("archive", "tasks", "baseline"):
        shutil.rmtree(work / d, ignore_errors=True)
    (work / "archive").mkdir()
    shutil.rmtree(share / "retrieved", ignore_errors=True)

    from ingest.simulator import simulate_share

    manifest_path = share / "manifest.json"
    t = time.perf_counter()
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("scale") == args.scale:
        manifest = json.loads(manifest_path.read_text())
        print(f"reusing the {args.scale} share in {share}")
    else:
        shutil.rmtree(share, ignore_errors=True)
        manifest = simulate_share(share, subjects=1, sessions=1, scale=args.scale) if args.scale == "bench" \
            else simulate_share(share, subjects=1, sessions=1, scale="small")
        print(f"simulated the {args.scale} share in {time.perf_counter() - t:.0f} s")
    configure(share, work, manifest)

    from pipeline import config, db
    from pipeline.shell import load_schema_modules

    config.set_active(None)
    load_schema_modules()
    from ingest import behavior, share as share_mod
    from ingest.runner import run_ingest
    from pipeline import publication as pub
    from pipeline.subject_loader import load_subject_file

    results: dict = {"backend": db.backend(), "scale": args.scale}
    try:
        load_subject_file(share / "subjects.yaml")
        share_mod.scan(["behavior", "ephys"])
        run_ingest(behavior.BehaviorIngest, progress=False)
        plan = pub.publish_plan([pub.EPHYS])
        assert len(plan) >= 1, "no ephys session to publish"
        plan = plan[:1]
        files = [Path(p) for p in plan[0]["paths"]]
        nbytes = plan[0]["bytes"]
        results.update(files=len(files), bytes=nbytes, largest_file_bytes=max(f.stat().st_size for f in files))
        print(f"session {plan[0]['subject_id']}/{plan[0]['session']}: {len(files)} files, {nbytes / 1e9:.2f} GB "
              f"(largest {results['largest_file_bytes'] / 1e9:.2f} GB)")
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the cache

        # baseline: cp + md5sum of the same files
        target = work / "baseline"
        target.mkdir()
        t = time.perf_counter()
        for i, f in enumerate(files):
            subprocess.run(["cp", str(f), str(target / f"{i}_{f.name}")], check=True)
        cp_s = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(["sync"], check=True)  # for context only: cp leaves the data in dirty pages
        sync_s = time.perf_counter() - t
        t = time.perf_counter()
        out = subprocess.run(["md5sum", *map(str, files)], check=True, capture_output=True, text=True).stdout
        md5_s = time.perf_counter() - t
        md5s = {line.split(None, 1)[1].strip(): line.split()[0] for line in out.splitlines()}
        shutil.rmtree(target)
        base_s = cp_s + md5_s
        results.update(cp_s=round(cp_s, 2), sync_after_cp_s=round(sync_s, 2), md5sum_s=round(md5_s, 2), baseline_s=round(base_s, 2),
                       baseline_mb_s=round(nbytes / base_s / 1e6, 1))

        # publish
        key = {"subject_id": plan[0]["subject_id"], "session": plan[0]["session"]}
        t = time.perf_counter()
        result = pub.ArchivedRawEphys.populate(key, suppress_errors=False)
        publish_s = time.perf_counter() - t
        assert result["success_count"] == 1, result
        recorded = {r["file_subpath"]: r["file_md5"] for r in (pub.DataSet.PhysicalFile & (pub.ArchivedRawEphys & key)).to_dicts()}
        for f in files:
            sub = f.relative_to(share / "ephys").as_posix().split("/", 2)[2]
            assert recorded[sub] == md5s[str(f)], f
        results.update(publish_s=round(publish_s, 2), publish_mb_s=round(nbytes / publish_s / 1e6, 1),
                       publish_vs_baseline=round(base_s / publish_s, 2))

        # retrieve into a fresh folder under the local endpoint path
        t = time.perf_counter()
        reports = (pub.ArchivedRawEphys & key).retrieve(into="retrieved")
        retrieve_s = time.perf_counter() - t
        fetched = [Path(p) for r in reports for p in r.fetched]
        assert len(fetched) == len(files), (len(fetched), len(files))
        results.update(retrieve_s=round(retrieve_s, 2), retrieve_mb_s=round(nbytes / retrieve_s / 1e6, 1),
                       retrieve_vs_baseline=round(base_s / retrieve_s, 2))
        results["target_met"] = bool(results["publish_vs_baseline"] >= 0.7 and results["retrieve_vs_baseline"] >= 0.7)
        print(f"baseline cp + md5sum: {cp_s:.2f} s + {md5_s:.2f} s = {base_s:.2f} s ({results['baseline_mb_s']} MB/s); "
              f"a sync after the cp took another {sync_s:.2f} s (publish and retrieve fsync every file)")
        print(f"publish:  {publish_s:.2f} s ({results['publish_mb_s']} MB/s) = {results['publish_vs_baseline']}x baseline")
        print(f"retrieve: {retrieve_s:.2f} s ({results['retrieve_mb_s']} MB/s) = {results['retrieve_vs_baseline']}x baseline")
        print(f"target (>= 0.7x for both): {'met' if results['target_met'] else 'NOT met'}")
    finally:
        if not args.keep:
            dropped = drop_schemas(os.environ["MAP_DB_PREFIX"])
            print(f"dropped {len(dropped)} schema(s) with prefix {os.environ['MAP_DB_PREFIX']}")
            shutil.rmtree(work / "archive", ignore_errors=True)
            shutil.rmtree(share / "retrieved", ignore_errors=True)
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "publication.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

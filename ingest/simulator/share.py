"""Render a plan into a share directory and write its manifest (the orchestration)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import ccf, manifest
from .bpod import write_behavior
from .dlc import write_tracking
from .histology import write_histology
from .jrclust import write_jrclust
from .kilosort import write_kilosort
from .model import SAMPLE_RATE, SharePlan, Session, go_cues_ephys, unit_spike_samples
from .spikeglx import bin_path, meta_dict, run_dir, write_bin, write_meta, write_sync
from .subjects import write_subjects
from .video import write_videos


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def render_ephys(root: Path, plan: SharePlan, s: Session, si: int) -> dict:
    """Spikes, binaries, metas, sorter output, sync files and histology of one session."""
    e = s.ephys
    go, instr = go_cues_ephys(s)
    sync = write_sync(root, s)
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    probes = []
    for p in e.probes:
        spikes = []
        for u in p.units:
            pref = np.array([1.0 if x == u.preference else 0.3 for x in instr])
            st = unit_spike_samples(u, go, pref, e.n_samples,
                                    seed=int(_rng(plan.seed, si, p.imec, u.cluster_id, 1)
                                             .integers(2**62)))
            u.spike_count = int(len(st))
            spikes.append(st)
        bp = bin_path(root, s, p)
        size, sha1 = write_bin(bp, p, e.n_samples, spikes, plan.seed * 1000 + si * 10 + p.imec,
                               plan.scale.max_waveform_spikes)
        meta = meta_dict(s, p, size, sha1)
        mp = bp.with_suffix(".meta")
        write_meta(mp, meta)
        rng = _rng(plan.seed, si, p.imec, 2)
        if p.sorter == "kilosort2":
            sort_out = rel(write_kilosort(root, s, p, spikes, rng))
        else:
            sort_out = rel(write_jrclust(root, s, p, spikes, rng))
        del spikes
        hist = write_histology(root, s, p) if plan.scale.side_data else {}
        probes.append({
            "imec": p.imec, "probe": p.imec + 1, "type_code": p.type_code,
            "part_number": p.part_number, "serial": str(p.serial), "n_shanks": p.n_shanks,
            "n_saved_channels": p.n_saved, "saved_channels": p.saved_channels,
            "bin": rel(bp), "meta": rel(mp), "file_create_time": meta["fileCreateTime"],
            "sorter": p.sorter, "sorting": sort_out, "curated": p.curated,
            "uv_per_bit": p.uv_per_bit, "insertion": p.insertion, "histology": hist,
            "n_units": len(p.units),
            "units": [{"cluster_id": u.cluster_id, "spike_count": u.spike_count,
                       "quality": u.quality, "ks_label": u.ks_label, "group": u.group,
                       "peak_channel": u.peak_channel, "isi_violations": u.isi_violations,
                       "model": {"base_rate_hz": round(u.base_rate, 4),
                                 "go_cue_mod_hz": round(u.mod_rate, 4),
                                 "preference": u.preference, "latency_s": round(u.latency, 4),
                                 "width_s": round(u.width, 4),
                                 "amplitude_uv": round(u.amplitude_uv, 2)}}
                      for u in p.units],
        })
    d = run_dir(root, s)
    return {"run": e.run, "dir": rel(d), "clock_offset_s": e.offset, "n_samples": e.n_samples,
            "sample_rate": SAMPLE_RATE, "duration_s": e.n_samples / SAMPLE_RATE,
            "trial_starts_file": f"{rel(d)}/{sync['trial_starts']}",
            "bitcode_edges_file": f"{rel(d)}/{sync['bitcode_edges']}",
            "bitcode_mat": f"{rel(d)}/{sync['bitcode_mat']}" if sync["bitcode_mat"] else None,
            "probes": probes}


def render(root: Path, plan: SharePlan, common: bool = True) -> tuple[list, dict]:
    """Write every file of the plan; returns (manifest session entries, ccf entry).
    common=False skips subjects.yaml/csv and the CCF (when adding sessions to a share)."""
    root.mkdir(parents=True, exist_ok=True)
    ccf_entry = {}
    if common:
        write_subjects(root, plan.subjects)
        ccf_entry = ccf.write_ccf(root) if plan.scale.side_data else {}
    entries = []
    for si, s in enumerate(plan.sessions):
        write_behavior(root, s)
        extra: dict = {}
        if s.ephys is not None:
            extra["ephys"] = render_ephys(root, plan, s, si)
            extra["histology"] = {str(p["probe"]): p["histology"]
                                  for p in extra["ephys"]["probes"] if p["histology"]}
        if s.tracked:
            extra["tracking"] = write_tracking(root, s, plan.scale.fps, _rng(plan.seed, si, 3))
            extra["videos"] = write_videos(root, s, plan.scale.video_frames)
        entries.append(manifest.session_entry(s, extra))
    return entries, ccf_entry

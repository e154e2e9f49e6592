"""SpikeGLX / CatGT output: `.ap.bin` + `.ap.meta` per probe, NIDQ edge files and bitcode.mat.

Why a channel subset: a full 385-channel session is tens of GB, so the simulated rig saves a
subset (`snsSaveChanSubset`; nSavedChans = saved AP channels + 1 sync channel) and the sorter
sorted exactly those. The recording covers the whole behaviour session.

Bitcode edge encoding (`<run>_g0_tcat.nidq.XA_1_2.txt`, times in s on the ephys clock):
after the trial-start edge at time s_i (listed in `XA_0_0.txt`), the 10-bit GUI.randomID is
sent most-significant bit first in 10 slots of BIT_SLOT_S (4 ms) starting BIT_LEAD_S (10 ms)
after s_i; bit k (k = 0 for the MSB) set -> a 2 ms pulse whose rising edge is at
s_i + BIT_LEAD_S + k * BIT_SLOT_S, and that rising edge is listed. Decode: for each pulse p
with s_i <= p < s_{i+1}, k = round((p - s_i - BIT_LEAD_S) / BIT_SLOT_S), code |= 1 << (9 - k).
"""
from __future__ import annotations

import hashlib
import datetime as dt
from pathlib import Path

import numpy as np

from .matfile import save_v5
from .model import PROBE_TYPES, SAMPLE_RATE, Probe, Session

BIT_LEAD_S = 0.010
BIT_SLOT_S = 0.004
N_BITS = 10
SYNC_BIT_VALUE = 64       # SpikeGLX imec sync: bit 6 of the SY channel, 1 Hz square wave
CHUNK_SECONDS = 10


# ----------------------------------------------------------------------------- geometry
def electrode_of_channel(type_code: int, ch: int) -> tuple[int, int]:
    """(shank, electrode-within-shank) an acquired channel reads, per our IMRO table."""
    if PROBE_TYPES[type_code][1] == 4:
        return ch // 96, ch % 96
    return 0, ch


def site_position(type_code: int, shank: int, electrode: int) -> tuple[float, float]:
    """(x, y) in um exactly as probeinterface's read_spikeglx places the site (x from the
    leftmost column of shank 0, y from the tip row); Kilosort's 43/11/59/27 table is the
    same geometry shifted by 11 um."""
    row, col = divmod(electrode, 2)
    if type_code == 0:   # NP1.0 staggered: even rows 16/48 um, odd rows 0/32 um, 20 um pitch
        return (16.0 if row % 2 == 0 else 0.0) + 32.0 * col, 20.0 * row
    return 250.0 * shank + 32.0 * col, 15.0 * row  # NP2.0: 15 um rows, shanks 250 um apart


def channel_positions(p: Probe) -> np.ndarray:
    """(n_saved_ap, 2) positions of the saved AP channels (Kilosort channel order)."""
    return np.array([site_position(p.type_code, *electrode_of_channel(p.type_code, c))
                     for c in p.saved_channels], float)


def channel_shanks(p: Probe) -> np.ndarray:
    return np.array([electrode_of_channel(p.type_code, c)[0] for c in p.saved_channels], int)


# ----------------------------------------------------------------------------- paths
def run_dir(root: Path, s: Session) -> Path:
    return root / "ephys" / s.h2o / f"catgt_{s.ephys.run}_g0"


def probe_dir(root: Path, s: Session, p: Probe) -> Path:
    return run_dir(root, s) / f"{s.ephys.run}_g0_imec{p.imec}"


def bin_path(root: Path, s: Session, p: Probe) -> Path:
    return probe_dir(root, s, p) / f"{s.ephys.run}_g0_tcat.imec{p.imec}.ap.bin"


# ----------------------------------------------------------------------------- binary
def waveform_shape(nt: int = 82) -> np.ndarray:
    """Unit-peak extracellular spike shape (trough at nt//2) used by templates and the bin."""
    t = (np.arange(nt) - nt // 2) / SAMPLE_RATE * 1e3  # ms
    w = -np.exp(-0.5 * (t / 0.12) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.45) / 0.3) ** 2)
    return w / np.abs(w).max()


def spatial_weights(pos: np.ndarray, peak: int) -> np.ndarray:
    d = np.linalg.norm(pos - pos[peak], axis=1)
    w = np.exp(-d / 40.0)
    w[w < 0.05] = 0.0
    return w


def write_bin(path: Path, p: Probe, n_samples: int, spikes: list, seed: int,
              max_waveform_spikes: int) -> tuple[int, str]:
    """Write the int16 channel-interleaved file fast: a 1 s noise block (with the sync
    square wave) tiled over the recording, plus spike waveforms for up to
    max_waveform_spikes spikes (per-unit spike arrays in `spikes`). Returns (size, SHA1)."""
    rng = np.random.default_rng(seed)
    nch = p.n_saved
    n_ap = nch - 1
    block = np.zeros((SAMPLE_RATE, nch), np.int16)
    block[:, :n_ap] = rng.normal(0.0, 6.0, (SAMPLE_RATE, n_ap)).round().astype(np.int16)
    block[: SAMPLE_RATE // 2, n_ap] = SYNC_BIT_VALUE
    pos = channel_positions(p)
    shape = waveform_shape(82)
    total = sum(len(s) for s in spikes)
    frac = min(1.0, max_waveform_spikes / max(total, 1))
    # (sample, channel, value) triples of the waveforms to add, sorted by sample
    parts_s, parts_v = [], []
    for u, st in zip(p.units, spikes):
        if not len(st):
            continue
        sel = st[: int(np.ceil(len(st) * frac))] if frac < 1 else st
        w = spatial_weights(pos, u.peak_channel)
        chans = np.nonzero(w)[0]
        amp = u.amplitude_uv / p.uv_per_bit
        vals = (amp * w[chans][:, None] * shape[None, :]).astype(np.float32)  # (nc, 82)
        samp = (sel[:, None, None] - 41 + np.arange(82)[None, None, :])  # (n, 1, 82)
        flat = samp * nch + chans[None, :, None]  # (n, nc, 82) flat indices
        parts_s.append(flat.ravel())
        parts_v.append(np.broadcast_to(vals[None], flat.shape).ravel())
    flat_all = np.concatenate(parts_s) if parts_s else np.zeros(0, np.int64)
    vals_all = np.concatenate(parts_v) if parts_v else np.zeros(0)
    order = np.argsort(flat_all, kind="stable")
    flat_all, vals_all = flat_all[order], vals_all[order]
    sha = hashlib.sha1()
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = CHUNK_SECONDS * SAMPLE_RATE
    tiled = np.tile(block, (CHUNK_SECONDS, 1))
    with open(path, "wb") as fh:
        for start in range(0, n_samples, chunk):
            stop = min(start + chunk, n_samples)
            data = tiled[: stop - start].copy()
            lo, hi = np.searchsorted(flat_all, [start * nch, stop * nch])
            if hi > lo:
                add = np.bincount(flat_all[lo:hi] - start * nch, weights=vals_all[lo:hi],
                                  minlength=(stop - start) * nch)
                data = np.clip(data.ravel() + np.round(add), -32768, 32767).astype(np.int16)
            b = data.tobytes()
            sha.update(b)
            fh.write(b)
    return n_samples * nch * 2, sha.hexdigest().upper()


# ----------------------------------------------------------------------------- meta
def _subset_string(channels: list, sync_channel: int) -> str:
    return ",".join(str(c) for c in channels + [sync_channel])


def meta_dict(s: Session, p: Probe, size: int, sha1: str) -> dict:
    """Ordered key -> value of the CatGT-written `.ap.meta`."""
    pn, n_shanks, _, ai_max, max_int = PROBE_TYPES[p.type_code]
    e = s.ephys
    create = s.start + dt.timedelta(seconds=-e.offset)
    nch = p.n_saved
    if p.type_code == 0:
        imro = "(0,384)" + "".join(f"({c} 0 0 500 250 1)" for c in range(384))
        shank_map = "(1,2,480)" + "".join(
            "(0:{}:{}:1)".format(c % 2, c // 2) for c in p.saved_channels)
        acq = "384,384,1"
    else:
        imro = f"({p.type_code},384)" + "".join(
            "({} {} 0 0 {})".format(c, *electrode_of_channel(p.type_code, c)) if p.type_code == 24
            else f"({c} 1 0 {c})" for c in range(384))
        shank_map = f"({n_shanks},2,640)" + "".join(
            "({}:{}:{}:1)".format(sh, el % 2, el // 2)
            for sh, el in (electrode_of_channel(p.type_code, c) for c in p.saved_channels))
        acq = "384,0,1"
    chan_map = f"({acq})" + "".join(f"(AP{c};{c}:{i})" for i, c in enumerate(p.saved_channels)) \
        + f"(SY0;{384 if p.type_code else 768}:{len(p.saved_channels)})"
    run = e.run
    m = {
        "acqApLfSy": acq,
        "appVersion": "20230425",
        "catGTCmdline0": (f"<CatGT -dir=D:/ephys/{s.h2o} -run={run} -g=0 -t=0,0 -prb_fld "
                          f"-prb=0:{len(e.probes) - 1} -ap -ni -apfilter=butter,12,300,10000 "
                          f"-gblcar -xa=0,0,0,1.0,0,0 -xa=0,0,1,1.0,2,0 -dest=D:/catgt>"),
        "catGVals": "0,0",
        "catNFiles": "1",
        "catTVals": "0,0",
        "fileCreateTime": create.strftime("%Y-%m-%dT%H:%M:%S"),
        "fileName": f"D:/catgt/catgt_{run}_g0/{run}_g0_imec{p.imec}/{run}_g0_tcat.imec{p.imec}.ap.bin",
        "fileSHA1": sha1,
        "fileSizeBytes": str(size),
        "fileTimeSecs": repr(e.n_samples / SAMPLE_RATE),
        "firstSample": "0",
        "gateMode": "Immediate",
        "imAiRangeMax": repr(ai_max),
        "imAiRangeMin": repr(-ai_max),
        "imDatApi": "3.62.1",
        "imDatPrb_dock": "1",
        "imDatPrb_pn": pn,
        "imDatPrb_port": str(p.imec + 1),
        "imDatPrb_slot": "2",
        "imDatPrb_sn": str(p.serial),
        "imDatPrb_type": str(p.type_code),
        "imMaxInt": str(max_int),
        "imSampRate": str(SAMPLE_RATE),
        "nSavedChans": str(nch),
        "snsApLfSy": f"{nch - 1},0,1",
        # NP1.0 acquires 384 AP + 384 LF channels, so its sync channel is 768; NP2.0 has no LF band
        "snsSaveChanSubset": _subset_string(p.saved_channels, 768 if p.type_code == 0 else 384),
        "syncSourceIdx": "0",
        "syncSourcePeriod": "1",
        "trigMode": "Immediate",
        "typeImEnabled": str(len(e.probes)),
        "typeThis": "imec",
        "userNotes": "",
        "~imroTbl": imro,
        "~snsChanMap": chan_map,
        "~snsShankMap": shank_map,
    }
    return m


def write_meta(path: Path, meta: dict) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in meta.items()), newline="\n")


# ----------------------------------------------------------------------------- sync
def bitcode_edges(trial_starts: np.ndarray, codes: list) -> np.ndarray:
    """Rising-edge times of the bitcode pulses (encoding in the module docstring)."""
    out = []
    for t0, code in zip(trial_starts, codes):
        for k in range(N_BITS):
            if (int(code) >> (N_BITS - 1 - k)) & 1:
                out.append(t0 + BIT_LEAD_S + k * BIT_SLOT_S)
    return np.array(out)


def decode_bitcodes(trial_starts: np.ndarray, edges: np.ndarray) -> list:
    """Inverse of bitcode_edges (documented so readers can copy the rule)."""
    bounds = np.append(trial_starts, np.inf)
    codes = []
    for i, t0 in enumerate(trial_starts):
        p = edges[(edges >= t0) & (edges < bounds[i + 1])]
        ks = np.round((p - t0 - BIT_LEAD_S) / BIT_SLOT_S).astype(int)
        codes.append(int(sum(1 << (N_BITS - 1 - k) for k in ks if 0 <= k < N_BITS)))
    return codes


def write_lines(path: Path, values) -> None:
    path.write_text("".join(f"{v:.6f}\n" for v in values))


def write_sync(root: Path, s: Session, codes: list | None = None) -> dict:
    """XA_0_0 (trial starts) and XA_1_2 (bitcode edges), ephys clock; optional bitcode.mat."""
    d = run_dir(root, s)
    d.mkdir(parents=True, exist_ok=True)
    e = s.ephys
    starts = np.round(np.array([t.start + e.offset for t in s.trials]), 6)
    codes = [t.bitcode for t in s.trials] if codes is None else codes
    base = f"{e.run}_g0_tcat.nidq"
    out = {"trial_starts": f"{base}.XA_0_0.txt", "bitcode_edges": f"{base}.XA_1_2.txt",
           "bitcode_mat": None}
    write_lines(d / out["trial_starts"], starts)
    write_lines(d / out["bitcode_edges"], bitcode_edges(starts, codes))
    if e.bitcode_mat:
        name = f"{s.h2o}_{s.date_str}_bitcode.mat"
        go = np.round(np.array([t.start + t.go_cue + e.offset for t in s.trials]), 6)
        bits = np.array([format(c, "010b") for c in codes])
        save_v5(d / name, {"sTrig": starts.reshape(-1, 1), "goCue": go.reshape(-1, 1),
                           "bitCodeS": bits,
                           "trialNum": np.arange(1, len(codes) + 1, dtype=float).reshape(-1, 1)},
                s.start)
        out["bitcode_mat"] = name
    return out

"""Probe tracks in IBL alignment-GUI format, coordinates relative to bregma (um).

`histology/<h2o>/<YYYYMMDD>[_<k>]/probe<P>/channel_locations_shank<S>.json` (P = imec + 1,
S = 1-based shank) with keys `channel_<i>` (i = Kilosort channel index of a saved channel on
that shank) -> {x, y, z, axial, lateral, brain_region, brain_region_id} plus
`origin: {bregma: [ml, ap, dv]}` (CCF um); and `xyz_picks_shank<S>.json`
`{"xyz_picks": [[x, y, z], ...]}` from the brain surface to the tip. Regions are looked up in
the simulated CCF volume so histology and ccf/ always agree. The probe goes straight down."""
from __future__ import annotations

import json
from pathlib import Path

from . import ccf
from .model import Probe, Session
from .spikeglx import channel_positions, channel_shanks


def histology_dir(root: Path, s: Session, p: Probe) -> Path:
    return root / "histology" / s.h2o / f"{s.date_str}{s.suffix}" / f"probe{p.imec + 1}"


def write_histology(root: Path, s: Session, p: Probe) -> dict:
    d = histology_dir(root, s, p)
    d.mkdir(parents=True, exist_ok=True)
    pos = channel_positions(p)
    shanks = channel_shanks(p)
    ml0, ap0, depth = p.insertion["ml"], p.insertion["ap"], p.insertion["depth"]
    out = {}
    for sh in sorted(set(shanks.tolist())):
        xs = 250.0 * sh + 16.0  # shank centre line
        x_entry = ml0 + (xs - 16.0)
        z_surf = ccf.surface_z(x_entry, ap0)
        chans, regions = {}, {}
        for i in [int(k) for k in (shanks == sh).nonzero()[0]]:
            lx, ay = pos[i]
            x, y, z = ml0 + (lx - 16.0), ap0, z_surf - (depth - ay)
            rid = ccf.region_at(x, y, z)
            chans[f"channel_{i}"] = {"x": round(x, 2), "y": round(y, 2), "z": round(z, 2),
                                     "axial": float(ay), "lateral": float(lx),
                                     "brain_region": ccf.ACRONYM[rid], "brain_region_id": rid}
            regions[i] = ccf.ACRONYM[rid]
        chans["origin"] = {"bregma": [ccf.BREGMA["ml"], ccf.BREGMA["ap"], ccf.BREGMA["dv"]]}
        f_ch = d / f"channel_locations_shank{sh + 1}.json"
        f_ch.write_text(json.dumps(chans, indent=2))
        picks = [[round(x_entry, 2), ap0, round(z_surf - depth * f, 2)] for f in (0, 0.25, 0.5, 0.75, 1)]
        f_pk = d / f"xyz_picks_shank{sh + 1}.json"
        f_pk.write_text(json.dumps({"xyz_picks": picks}, indent=2))
        out[str(sh + 1)] = {"channel_locations": str(f_ch.relative_to(root)),
                            "xyz_picks": str(f_pk.relative_to(root)),
                            "regions": {str(k): v for k, v in regions.items()}}
    return out

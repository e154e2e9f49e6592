"""A small Allen-CCF-like annotation volume and ontology, consistent with the histology.

`ccf/annotation_100.nrrd`: uint32, axes (AP, DV, ML) like the Allen volumes, 100 um voxels,
132 x 80 x 114 (the 10 um volume's extent). The brain is an ellipsoid; labels by depth
below its dorsal surface and AP position: MOs (ALM lives here), MOp, SSp, fiber tracts, CP,
CA1, root; 0 outside the brain. `ccf/ontology.csv`: Allen structure ids and paths.
Bregma in CCF um (IBL convention): AP 5400, DV 332, ML 5739; coordinates "relative to
bregma" are x = ml - 5739 (um), y = 5400 - ap (anterior positive), z = 332 - dv (up positive)."""
from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np

RES = 100
SHAPE = (132, 80, 114)
BREGMA = {"ap": 5400.0, "dv": 332.0, "ml": 5739.0}
CENTER = (66.0, 42.0, 57.0)
RADII = (62.0, 38.0, 52.0)

_P = "/997/8/567/688/695/315/500/"
ONTOLOGY = [
    (997, "root", "root", "/997/", "FFFFFF"),
    (8, "grey", "Basic cell groups and regions", "/997/8/", "BFDAE3"),
    (567, "CH", "Cerebrum", "/997/8/567/", "B0F0FF"),
    (688, "CTX", "Cerebral cortex", "/997/8/567/688/", "B0FFB8"),
    (695, "CTXpl", "Cortical plate", "/997/8/567/688/695/", "70FF70"),
    (315, "Isocortex", "Isocortex", "/997/8/567/688/695/315/", "70FF71"),
    (500, "MO", "Somatomotor areas", _P, "1F9D5A"),
    (985, "MOp", "Primary motor area", _P + "985/", "1F9D5A"),
    (993, "MOs", "Secondary motor area", _P + "993/", "1F9D5A"),
    (453, "SS", "Somatosensory areas", "/997/8/567/688/695/315/453/", "188064"),
    (322, "SSp", "Primary somatosensory area", "/997/8/567/688/695/315/453/322/", "188064"),
    (1089, "HPF", "Hippocampal formation", "/997/8/567/688/695/1089/", "7ED04B"),
    (1080, "HIP", "Hippocampal region", "/997/8/567/688/695/1089/1080/", "7ED04B"),
    (375, "CA", "Ammon's horn", "/997/8/567/688/695/1089/1080/375/", "7ED04B"),
    (382, "CA1", "Field CA1", "/997/8/567/688/695/1089/1080/375/382/", "7ED04B"),
    (623, "CNU", "Cerebral nuclei", "/997/8/567/623/", "98D6F9"),
    (477, "STR", "Striatum", "/997/8/567/623/477/", "98D6F9"),
    (485, "STRd", "Striatum dorsal region", "/997/8/567/623/477/485/", "98D6F9"),
    (672, "CP", "Caudoputamen", "/997/8/567/623/477/485/672/", "98D6F9"),
    (1009, "fiber tracts", "fiber tracts", "/997/1009/", "CCCCCC"),
]
ACRONYM = {r[0]: r[1] for r in ONTOLOGY}
ACRONYM[0] = "void"


def surface_dv_vox(ap_vox, ml_vox):
    """Dorsal brain surface (DV, voxels) above (ap, ml) in voxels; NaN outside the brain."""
    q = 1 - ((np.asarray(ap_vox) - CENTER[0]) / RADII[0]) ** 2 - \
        ((np.asarray(ml_vox) - CENTER[2]) / RADII[2]) ** 2
    return np.where(q > 0, CENTER[1] - RADII[1] * np.sqrt(np.clip(q, 0, None)), np.nan)


def annotation_volume() -> np.ndarray:
    ap, dv, ml = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    inside = (((ap - CENTER[0]) / RADII[0]) ** 2 + ((dv - CENTER[1]) / RADII[1]) ** 2 +
              ((ml - CENTER[2]) / RADII[2]) ** 2) <= 1
    depth = (dv - surface_dv_vox(ap, ml)) * RES
    ap_rel = BREGMA["ap"] - ap * RES
    vol = np.zeros(SHAPE, np.uint32)
    cortex = np.where(ap_rel > 1500, 993, np.where(ap_rel > -500, 985, 322))
    deep = np.where(ap_rel < -1000, np.where(depth < 2500, 382, 997),
                    np.where(depth < 4500, 672, 997))
    lab = np.where(depth < 1200, cortex, np.where(depth < 1500, 1009, deep))
    vol[inside] = lab[inside]
    return vol


_VOL: np.ndarray | None = None


def volume() -> np.ndarray:
    global _VOL
    if _VOL is None:
        _VOL = annotation_volume()
    return _VOL


def to_voxel(x: float, y: float, z: float) -> tuple:
    """Bregma-relative um -> (ap, dv, ml) voxel index (clipped to the volume)."""
    idx = (round((BREGMA["ap"] - y) / RES), round((BREGMA["dv"] - z) / RES),
           round((BREGMA["ml"] + x) / RES))
    return tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(idx, SHAPE))


def region_at(x: float, y: float, z: float) -> int:
    return int(volume()[to_voxel(x, y, z)])


def surface_z(x: float, y: float) -> float:
    """Bregma-relative z (um) of the brain surface above (x, y)."""
    dv = float(surface_dv_vox((BREGMA["ap"] - y) / RES, (BREGMA["ml"] + x) / RES)) * RES
    return BREGMA["dv"] - dv


def write_ccf(root: Path) -> dict:
    d = root / "ccf"
    d.mkdir(parents=True, exist_ok=True)
    vol = volume()
    header = {"space": "left-posterior-superior", "kinds": ["domain"] * 3,
              "space directions": np.eye(3) * RES, "encoding": "gzip"}
    path = d / f"annotation_{RES}.nrrd"
    # default (Fortran) index order, like the Allen files: nrrd.read() gives (AP, DV, ML)
    nrrd.write(str(path), vol, header)
    raw = path.read_bytes()
    head_end = raw.index(b"\n\n") + 2
    head = b"".join(ln for ln in raw[:head_end].splitlines(True)
                    if not ln.startswith(b"# on "))  # pynrrd stamps the wall-clock time here
    path.write_bytes(head + raw[head_end:])
    lines = ["id,acronym,name,structure_id_path,color_hex_triplet"]
    for sid, acr, name, path, color in ONTOLOGY:
        lines.append(f'{sid},{acr},"{name}",{path},{color}')
    (d / "ontology.csv").write_text("\n".join(lines) + "\n")
    labels = sorted(int(v) for v in np.unique(vol))
    return {"annotation": f"ccf/annotation_{RES}.nrrd", "ontology": "ccf/ontology.csv",
            "resolution_um": RES, "shape": list(SHAPE), "axes": ["AP", "DV", "ML"],
            "bregma_um": BREGMA, "labels": labels}

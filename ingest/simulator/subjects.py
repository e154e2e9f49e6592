"""`subjects.yaml` (read by `mapshell load-subjects`) and the same subjects as `subjects.csv`.

Written by hand, not yaml.dump, so the shape is exactly the documented one (flow mappings for
people/rigs/water_restriction/procedures) and the bytes are stable."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from .model import RIG, Subject

PEOPLE = [("daveliu", "Dave Liu")]
RIGS = [(RIG, "2w.334", "ephys rig 1")]
SOURCES = ("Jackson Labs", "Allen Institute", "Charles River", "MMRRC", "Taconic", "Other")


def subject_record(sub: Subject, i: int) -> dict:
    surgery_day = dt.datetime.combine(sub.wr_start_date - dt.timedelta(days=12), dt.time(10, 0))
    return {
        "subject_id": sub.subject_id, "username": sub.username, "cage_number": sub.cage_number,
        "date_of_birth": sub.date_of_birth, "sex": sub.sex,
        "animal_source": SOURCES[0] if i % 3 != 2 else SOURCES[2],
        "strains": ["C57BL/6J"] if i % 2 == 0 else ["Ai32", "VGAT-ChR2-EYFP"],
        "water_restriction": {"water_restriction_number": sub.h2o, "cage_number": sub.cage_number,
                              "wr_start_date": sub.wr_start_date,
                              "wr_start_weight": sub.wr_start_weight},
        "surgeries": [{"surgery_id": 1, "username": sub.username, "start_time": surgery_day,
                       "end_time": surgery_day + dt.timedelta(minutes=90),
                       "surgery_description": "headbar and craniotomy",
                       "procedures": [{"procedure_id": 1, "skull_reference": "Bregma",
                                       "ml_location": 1500, "ap_location": 2500, "dv_location": 0,
                                       "surgery_procedure_description": "craniotomy over left ALM"}]}],
    }


def write_subjects(root: Path, subjects: list) -> list:
    recs = [subject_record(s, i) for i, s in enumerate(subjects)]
    out = ["people:"] + [f"  - {{username: {u}, fullname: {n}}}" for u, n in PEOPLE]
    out += ["rigs:"] + [f"  - {{rig: {r}, room: {room}, rig_description: {d}}}" for r, room, d in RIGS]
    out += ["subjects:"]
    for r in recs:
        wr = r["water_restriction"]
        out += [f"  - subject_id: {r['subject_id']}",
                f"    username: {r['username']}",
                f"    cage_number: {r['cage_number']}",
                f"    date_of_birth: {r['date_of_birth']:%Y-%m-%d}",
                f"    sex: {r['sex']}",
                f"    animal_source: {r['animal_source']}",
                f"    strains: [{', '.join(r['strains'])}]",
                f"    water_restriction: {{water_restriction_number: {wr['water_restriction_number']}, "
                f"cage_number: {wr['cage_number']}, wr_start_date: {wr['wr_start_date']:%Y-%m-%d}, "
                f"wr_start_weight: {wr['wr_start_weight']}}}",
                "    surgeries:"]
        for sg in r["surgeries"]:
            out += [f"      - surgery_id: {sg['surgery_id']}",
                    f"        username: {sg['username']}",
                    f"        start_time: {sg['start_time']:%Y-%m-%d %H:%M:%S}",
                    f"        end_time: {sg['end_time']:%Y-%m-%d %H:%M:%S}",
                    f"        surgery_description: {sg['surgery_description']}",
                    "        procedures:"]
            for pr in sg["procedures"]:
                out.append("          - {" + ", ".join(f"{k}: {v}" for k, v in pr.items()) + "}")
    (root / "subjects.yaml").write_text("\n".join(out) + "\n")
    cols = ["subject_id", "username", "fullname", "cage_number", "date_of_birth", "sex",
            "animal_source", "strain", "water_restriction_number", "wr_start_date",
            "wr_start_weight"]
    full = dict(PEOPLE)
    rows = [",".join(cols)]
    for r in recs:
        wr = r["water_restriction"]
        rows.append(",".join(str(v) for v in [
            r["subject_id"], r["username"], full[r["username"]], r["cage_number"],
            f"{r['date_of_birth']:%Y-%m-%d}", r["sex"], r["animal_source"], r["strains"][0],
            wr["water_restriction_number"], f"{wr['wr_start_date']:%Y-%m-%d}", wr["wr_start_weight"]]))
    (root / "subjects.csv").write_text("\n".join(rows) + "\n")
    return recs

"""mapshell load-subjects: every bad row reported at once, nothing inserted on error, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.subject_loader import SubjectFileError, load_subject_file

GOOD_YAML = textwrap.dedent("""
    people:
      - {username: daveliu, fullname: Dave Liu}
      - {username: susu, fullname: Susu Chen}
    rigs:
      - {rig: RRig, room: 2w.334, rig_description: ephys rig 1}
    subjects:
      - subject_id: 407513
        username: daveliu
        cage_number: 154522
        date_of_birth: 2018-01-01
        sex: M
        animal_source: Jackson Labs
        strains: [C57BL/6J]
        water_restriction: {water_restriction_number: dl36, cage_number: 154522, wr_start_date: 2018-02-01, wr_start_weight: 22.5}
        surgeries:
          - surgery_id: 1
            username: daveliu
            start_time: 2018-01-20 10:00:00
            end_time: 2018-01-20 11:30:00
            surgery_description: headbar and craniotomy
            procedures:
              - {procedure_id: 1, skull_reference: Bregma, ml_location: 1500, ap_location: 2500, dv_location: 0, surgery_procedure_description: craniotomy over left ALM}
      - subject_id: 440956
        username: susu
        cage_number: 160001
        sex: F
        animal_source: Other
        water_restriction: {water_restriction_number: SC022, cage_number: 160001, wr_start_date: 2019-03-01, wr_start_weight: 20.1}
""")

GOOD_CSV = textwrap.dedent("""\
    subject_id,username,fullname,cage_number,date_of_birth,sex,animal_source,strain,water_restriction_number,wr_start_date,wr_start_weight
    500001,tw,Tom Wang,170001,2020-05-01,F,Charles River,C57BL/6J,tw5,2020-06-01,21.0
    500002,tw,Tom Wang,170002,,M,Jackson Labs,,tw6,2020-06-02,23.5
""")


def counts(lab) -> dict:
    return {name: len(table()) for name, table in [("person", lab.Person), ("rig", lab.Rig), ("subject", lab.Subject),
                                                   ("strain", lab.Subject.Strain), ("wr", lab.WaterRestriction),
                                                   ("surgery", lab.Surgery), ("procedure", lab.Surgery.Procedure)]}


def test_yaml_loads_everything_once(clean_lab, tmp_path):
    lab = clean_lab["lab"]
    path = tmp_path / "subjects.yaml"
    path.write_text(GOOD_YAML)
    result = load_subject_file(path)
    assert result.total == 2 + 1 + 2 + 1 + 2 + 1 + 1
    assert counts(lab) == {"person": 2, "rig": 1, "subject": 2, "strain": 1, "wr": 2, "surgery": 1, "procedure": 1}
    assert (lab.WaterRestriction & "water_restriction_number = 'dl36'").to_arrays("subject_id").tolist() == [407513]
    again = load_subject_file(path)
    assert again.total == 0
    assert counts(lab)["subject"] == 2


def test_csv_loads(clean_lab, tmp_path):
    lab = clean_lab["lab"]
    path = tmp_path / "subjects.csv"
    path.write_text(GOOD_CSV)
    assert load_subject_file(path).total == 1 + 2 + 1 + 2
    rows = (lab.Subject * lab.WaterRestriction).to_dicts(order_by="subject_id")
    assert [(r["subject_id"], r["water_restriction_number"], r["sex"]) for r in rows] == [(500001, "tw5", "F"), (500002, "tw6", "M")]
    assert rows[1]["date_of_birth"] is None
    assert load_subject_file(path).total == 0


def test_every_bad_row_reported_and_nothing_inserted(clean_lab, tmp_path):
    lab = clean_lab["lab"]
    bad = GOOD_CSV + textwrap.dedent("""\
        abc,tw,Tom Wang,170003,2020-05-01,X,Charles River,C57BL/6J,tw7,2020-06-01,21.0
        500004,nobody_known,,170004,2020-13-01,M,Mars,,tw5,2020-06-01,heavy
    """)
    path = tmp_path / "bad.csv"
    path.write_text(bad)
    with pytest.raises(SubjectFileError) as err:
        load_subject_file(path)
    message = str(err.value)
    for expected in (
        "row 4, column subject_id: 'abc' is not a whole number",
        "row 4, column sex: 'X' is not a known sex",
        "row 5, column username: 'nobody_known' is not a known person",
        "row 5, column date_of_birth: '2020-13-01' is not a date",
        "row 5, column animal_source: 'Mars' is not a known animal source",
        "row 5, column water_restriction_number: 'tw5' appears again (first at row 2)",
        "row 5, column wr_start_weight: 'heavy' is not a number",
    ):
        assert expected in message, message
    assert "nothing was inserted" in message and str(path) in message
    assert counts(lab) == dict.fromkeys(counts(lab), 0)


def test_conflict_with_database_is_a_bad_row(clean_lab, tmp_path):
    lab = clean_lab["lab"]
    path = tmp_path / "subjects.yaml"
    path.write_text(GOOD_YAML)
    load_subject_file(path)
    changed = tmp_path / "changed.yaml"
    changed.write_text(GOOD_YAML.replace("sex: F", "sex: M"))
    with pytest.raises(SubjectFileError, match=r"column sex is 'M' in the file but 'F' in the database"):
        load_subject_file(changed)
    assert (lab.Subject & {"subject_id": 440956}).to_dicts()[0]["sex"] == "F"


def test_mapshell_load_subjects_reports_without_traceback(clean_lab, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("subjects:\n  - {subject_id: 1, username: ghost, cage_number: x, sex: M, animal_source: Other}\n")
    env = {**os.environ}
    result = subprocess.run([sys.executable, "-m", "pipeline.shell", "load-subjects", str(path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "subjects[0], column username: 'ghost' is not a known person" in result.stderr
    assert "subjects[0], column cage_number: 'x' is not a whole number" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_YAML)
    result = subprocess.run([sys.executable, "-m", "pipeline.shell", "load-subjects", str(good)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "inserted 10 row(s)" in result.stdout

"""Load people, rigs, subjects, water restrictions and surgeries from a lab's spreadsheet (CSV or YAML).

Every row is checked before anything is written, and every bad row is reported at once (row,
column, reason): a file with any bad row inserts nothing. Loading the same file again inserts
nothing new; a row that contradicts what the database already holds is a bad row.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

import yaml

SEXES = ("M", "F", "Unknown")
CSV_COLUMNS = (
    "subject_id", "username", "fullname", "cage_number", "date_of_birth", "sex", "animal_source", "strain",
    "water_restriction_number", "wr_start_date", "wr_start_weight",
)


class SubjectFileError(Exception):
    """A subjects file with bad rows; the message lists every one."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was inserted:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class Rows:
    """What a file asks to insert, table by table, ready for DataJoint."""

    people: list[dict] = field(default_factory=list)
    rigs: list[dict] = field(default_factory=list)
    subjects: list[dict] = field(default_factory=list)
    strains: list[dict] = field(default_factory=list)
    water_restrictions: list[dict] = field(default_factory=list)
    surgeries: list[dict] = field(default_factory=list)
    procedures: list[dict] = field(default_factory=list)


@dataclass
class LoadResult:
    inserted: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.inserted.values())


# --- field parsers: return the clean value or raise ValueError(reason) --------------------------

def _int(value: Any) -> int:
    if isinstance(value, bool) or value in (None, ""):
        raise ValueError("is missing" if value in (None, "") else f"{value!r} is not a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    return number


def _text(limit: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value is None or str(value).strip() == "":
            raise ValueError("is missing")
        text = str(value).strip()
        if len(text) > limit:
            raise ValueError(f"{text!r} is longer than {limit} characters")
        return text

    return parse


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _optional_date(value: Any) -> dt.date | None:
    return None if value in (None, "") else _date(value)


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a date and time (YYYY-MM-DD HH:MM:SS)") from None


def _decimal(value: Any) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, AttributeError):
        raise ValueError("is missing" if value in (None, "") else f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a number")
    return number


def _optional_decimal(value: Any) -> Decimal | None:
    return None if value in (None, "") else _decimal(value)


def _one_of(choices: tuple | set, what: str) -> Callable[[Any], str]:
    """A value from a lookup, matched without regard to case (MySQL compares that way, PostgreSQL
    does not), returned in the lookup's own spelling."""
    canonical = {str(c).lower(): c for c in choices}

    def parse(value: Any) -> str:
        text = "" if value is None else str(value).strip()
        if text.lower() not in canonical:
            raise ValueError(f"{text!r} is not a known {what} (one of: {', '.join(sorted(choices))})")
        return canonical[text.lower()]

    return parse


# --- reading files into records with row labels ---------------------------------------------------

def _read(path: Path) -> dict[str, list[tuple[str, dict]]]:
    """Records per section, each with a label for messages (``row 3`` / ``subjects[2]``)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("subject_id", "water_restriction_number") if c not in (reader.fieldnames or [])]
            if missing:
                raise SubjectFileError(path, [f"header: column(s) {', '.join(missing)} missing"])
            rows = [(f"row {i}", row) for i, row in enumerate(reader, start=2)]
        people, subjects = {}, []
        for label, row in rows:
            if row.get("username") and row.get("fullname"):
                people.setdefault(row["username"].strip(), (label, {"username": row["username"], "fullname": row["fullname"]}))
            subject = {k: row.get(k) for k in ("subject_id", "username", "cage_number", "date_of_birth", "sex", "animal_source")}
            subject["strains"] = [s for s in (row.get("strain") or "").split(";") if s.strip()]
            subject["water_restriction"] = {
                "water_restriction_number": row.get("water_restriction_number"),
                "cage_number": row.get("cage_number"),
                "wr_start_date": row.get("wr_start_date"),
                "wr_start_weight": row.get("wr_start_weight"),
            }
            subjects.append((label, subject))
        return {"people": list(people.values()), "rigs": [], "subjects": subjects}
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise SubjectFileError(path, [f"YAML syntax error: {err}"]) from None
        if not isinstance(data, dict):
            raise SubjectFileError(path, ["the top level must be a mapping with people, rigs and subjects"])
        sections = {}
        for name in ("people", "rigs", "subjects"):
            items = data.get(name) or []
            if not isinstance(items, list):
                raise SubjectFileError(path, [f"{name}: must be a list"])
            sections[name] = [(f"{name}[{i}]", item if isinstance(item, dict) else {"": item}) for i, item in enumerate(items)]
        return sections
    raise SubjectFileError(path, [f"unknown file type {suffix!r}: use .csv, .yaml or .yml"])


class _Checker:
    """Collects problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def field(self, label: str, record: dict, column: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(record.get(column))
        except ValueError as err:
            self.problems.append(f"{label}, column {column}: {err}")
            return None

    def problem(self, label: str, column: str, reason: str) -> None:
        self.problems.append(f"{label}, column {column}: {reason}")


def parse_subject_file(path: Path, known: dict[str, set]) -> Rows:
    """Check every record of ``path`` against the lookups in ``known``; raise with all problems."""
    path = Path(path)
    sections = _read(path)
    check = _Checker()
    rows = Rows()
    people = set(known["people"])
    for label, rec in sections["people"]:
        username = check.field(label, rec, "username", _text(24))
        fullname = check.field(label, rec, "fullname", _text(255))
        if username:
            people.add(username)
            rows.people.append({"username": username, "fullname": fullname})
    for label, rec in sections["rigs"]:
        rig = check.field(label, rec, "rig", _text(24))
        room = check.field(label, rec, "room", _text(20))
        description = check.field(label, rec, "rig_description", _text(1024))
        rows.rigs.append({"rig": rig, "room": room, "rig_description": description})
    person = _one_of(people, "person (add them under people)")
    seen_ids: dict[int, str] = {}
    seen_h2o: dict[str, str] = {}
    for label, rec in sections["subjects"]:
        subject_id = check.field(label, rec, "subject_id", _int)
        subject = {
            "subject_id": subject_id,
            "username": check.field(label, rec, "username", person),
            "cage_number": check.field(label, rec, "cage_number", _int),
            "date_of_birth": check.field(label, rec, "date_of_birth", _optional_date),
            "sex": check.field(label, rec, "sex", _one_of(SEXES, "sex")),
            "animal_source": check.field(label, rec, "animal_source", _one_of(known["animal_sources"], "animal source")),
        }
        if subject_id is not None:
            if subject_id in seen_ids:
                check.problem(label, "subject_id", f"{subject_id} appears again (first at {seen_ids[subject_id]})")
            seen_ids[subject_id] = label
        rows.subjects.append(subject)
        for strain in rec.get("strains") or []:
            name = check.field(label, {"strains": strain}, "strains", _one_of(known["strains"], "strain"))
            rows.strains.append({"subject_id": subject_id, "animal_strain": name})
        wr = rec.get("water_restriction")
        if wr:
            wr_label = f"{label}.water_restriction" if label.startswith("subjects") else label
            h2o = check.field(wr_label, wr, "water_restriction_number", _text(16))
            if h2o is not None:
                if h2o in seen_h2o:
                    check.problem(wr_label, "water_restriction_number", f"{h2o!r} appears again (first at {seen_h2o[h2o]})")
                seen_h2o[h2o] = wr_label
            rows.water_restrictions.append({
                "subject_id": subject_id,
                "water_restriction_number": h2o,
                "wr_cage_number": check.field(wr_label, wr, "cage_number", _int),
                "wr_start_date": check.field(wr_label, wr, "wr_start_date", _date),
                "wr_start_weight": check.field(wr_label, wr, "wr_start_weight", _decimal),
            })
        for si, surgery in enumerate(rec.get("surgeries") or []):
            s_label = f"{label}.surgeries[{si}]"
            start = check.field(s_label, surgery, "start_time", _datetime)
            end = check.field(s_label, surgery, "end_time", _datetime)
            if start and end and end < start:
                check.problem(s_label, "end_time", f"{end} is before start_time {start}")
            surgery_id = check.field(s_label, surgery, "surgery_id", _int)
            rows.surgeries.append({
                "subject_id": subject_id, "surgery_id": surgery_id,
                "username": check.field(s_label, surgery, "username", person),
                "start_time": start, "end_time": end,
                "surgery_description": check.field(s_label, surgery, "surgery_description", _text(256)),
            })
            for pi, proc in enumerate(surgery.get("procedures") or []):
                p_label = f"{s_label}.procedures[{pi}]"
                rows.procedures.append({
                    "subject_id": subject_id, "surgery_id": surgery_id,
                    "procedure_id": check.field(p_label, proc, "procedure_id", _int),
                    "skull_reference": check.field(p_label, proc, "skull_reference", _one_of(known["skull_references"], "skull reference")),
                    "ap_location": check.field(p_label, proc, "ap_location", _optional_decimal),
                    "ml_location": check.field(p_label, proc, "ml_location", _optional_decimal),
                    "dv_location": check.field(p_label, proc, "dv_location", _optional_decimal),
                    "surgery_procedure_description": check.field(p_label, proc, "surgery_procedure_description", _text(1000)),
                })
    if check.problems:
        raise SubjectFileError(path, check.problems)
    return rows


def _conflicts(table, rows: list[dict], label: str) -> list[str]:
    """Rows whose key exists in ``table`` with different values."""
    problems = []
    primary = table.primary_key
    for row in rows:
        key = {k: row[k] for k in primary}
        existing = (table & key).to_dicts()
        if not existing:
            continue
        for column, value in row.items():
            have = existing[0].get(column)
            if column in primary or have is None and value is None:
                continue
            if str(have) != str(value) and not _same_number(have, value):
                problems.append(f"{label} {key}: column {column} is {value!r} in the file but {have!r} in the database")
    return problems


def _same_number(a: Any, b: Any) -> bool:
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except (InvalidOperation, ValueError):
        return False


def load_subject_file(path: Path) -> LoadResult:
    """Check ``path`` completely, then insert what is new in one transaction."""
    from . import lab

    path = Path(path)
    known = {
        "people": set(lab.Person().to_arrays("username")),
        "animal_sources": set(lab.AnimalSource().to_arrays("animal_source")),
        "strains": set(lab.AnimalStrain().to_arrays("animal_strain")),
        "skull_references": set(lab.SkullReference().to_arrays("skull_reference")),
    }
    rows = parse_subject_file(path, known)
    plan = [
        (lab.Person, rows.people, "person"),
        (lab.Rig, rows.rigs, "rig"),
        (lab.Subject, rows.subjects, "subject"),
        (lab.Subject.Strain, rows.strains, "subject strain"),
        (lab.WaterRestriction, rows.water_restrictions, "water restriction"),
        (lab.Surgery, rows.surgeries, "surgery"),
        (lab.Surgery.Procedure, rows.procedures, "surgery procedure"),
    ]
    problems = [p for table, table_rows, label in plan for p in _conflicts(table(), table_rows, label)]
    for wr in rows.water_restrictions:
        other = (lab.WaterRestriction & {"water_restriction_number": wr["water_restriction_number"]}) - {"subject_id": wr["subject_id"]}
        if other:
            owner = other.to_arrays("subject_id")[0]
            problems.append(f"water restriction number {wr['water_restriction_number']!r} already belongs to subject {owner}")
    if problems:
        raise SubjectFileError(path, problems)
    inserted = {}
    conn = lab.schema.connection
    with conn.transaction:
        for table, table_rows, label in plan:
            before = len(table())
            table.insert(table_rows, skip_duplicates=True)
            inserted[label] = len(table()) - before
    return LoadResult(inserted)

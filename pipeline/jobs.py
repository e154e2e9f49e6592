"""DataJoint job reservation, made safe against workers that die.

``populate(reserve_jobs=True)`` is the distributed engine; a worker killed with SIGKILL leaves
its job 'reserved' forever. Each reservation records the database connection that took it, and
a dead worker's connection is gone from the server, so such jobs can be told apart from live
ones and made pending again. Also: the error list behind ``mapshell errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import datajoint as dj

from . import db


def live_connection_ids(conn: dj.Connection) -> set[int]:
    """Ids of the connections the database server has open right now."""
    if db.backend() == "postgresql":
        rows = conn.query("SELECT pid FROM pg_stat_activity").fetchall()
    else:
        rows = conn.query("SELECT id FROM information_schema.PROCESSLIST").fetchall()
    return {int(r[0]) for r in rows}


def recover_dead_reservations(table: type[dj.Table] | dj.Table) -> int:
    """Make jobs reserved by connections that no longer exist pending again; returns how many."""
    table = table() if isinstance(table, type) else table
    jobs = table.jobs
    reserved = jobs.reserved.to_dicts()
    if not reserved:
        return 0
    alive = live_connection_ids(table.connection)
    recovered = 0
    for job in reserved:
        if int(job["connection_id"]) in alive:
            continue
        key = {k: job[k] for k in jobs.primary_key}
        (jobs & key).delete_quick()
        jobs.insert1({**key, "status": "pending", "priority": job["priority"]}, ignore_extra_fields=True)
        recovered += 1
    return recovered


def clear_errors(table: type[dj.Table] | dj.Table, restriction: Iterable[dict] | dict | None = None) -> int:
    """Forget recorded errors (all, or those matching ``restriction``) so the keys are tried again."""
    table = table() if isinstance(table, type) else table
    errors = table.jobs.errors
    if restriction is not None:
        errors = errors & restriction
    return errors.delete_quick(get_count=True)


@dataclass(frozen=True)
class JobError:
    table: str
    key: dict
    message: str
    when: object
    host: str
    pid: int


def job_errors(tables: Iterable[type[dj.Table]]) -> list[JobError]:
    """Every recorded error of these auto-populated tables, newest first."""
    found = []
    for table in tables:
        jobs = table().jobs
        for row in jobs.errors.to_dicts():
            key = {k: row[k] for k in jobs.primary_key}
            found.append(JobError(table.__name__, key, row["error_message"], row["completed_time"], row["host"], row["pid"]))
    return sorted(found, key=lambda e: str(e.when), reverse=True)


def job_counts(table: type[dj.Table]) -> dict:
    """Done, pending, reserved and error counts for one table."""
    progress = table().jobs.progress()
    return {"done": len(table()), **{k: progress.get(k, 0) for k in ("pending", "reserved", "error", "ignore")}}

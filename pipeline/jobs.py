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
    stack: str = ""       # the traceback DataJoint recorded

    @property
    def where(self) -> str:
        """The innermost frame of the traceback ('File "...", line N, in f'), or ''."""
        frames = [line.strip() for line in self.stack.splitlines() if line.strip().startswith("File ")]
        return frames[-1] if frames else ""


def job_errors(tables: Iterable[type[dj.Table]]) -> list[JobError]:
    """Every recorded error of these auto-populated tables, newest first."""
    found = []
    for table in tables:
        jobs = table().jobs
        for row in jobs.errors.to_dicts():
            key = {k: row[k] for k in jobs.primary_key}
            found.append(JobError(table.__name__, key, row["error_message"], row["completed_time"], row["host"], row["pid"],
                                  row.get("error_stack") or ""))
    return sorted(found, key=lambda e: str(e.when), reverse=True)


def job_counts(table: type[dj.Table]) -> dict:
    """Done, pending, reserved and error counts for one table."""
    progress = table().jobs.progress()
    return {"done": len(table()), **{k: progress.get(k, 0) for k in ("pending", "reserved", "error", "ignore")}}


# --- workers: rounds of populate over several tables (mapshell automate-computation) ------------

@dataclass
class RoundSummary:
    """One round of a worker over its tables."""

    made: dict[str, int]          # table -> keys this worker computed
    failed: dict[str, list[str]]  # table -> error messages of this round
    recovered: int                # dead workers' reservations made pending again
    pending: int                  # jobs still pending after the round (taken by others, or new)

    @property
    def idle(self) -> bool:
        """Nothing done, nothing recovered and nothing left to take: the work is finished."""
        return not any(self.made.values()) and not any(self.failed.values()) and not self.recovered and not self.pending

    def lines(self) -> list[str]:
        out = [f"{name}: {n} made" for name, n in self.made.items() if n]
        out += [f"{name}: {len(msgs)} error(s), first: {msgs[0]}" for name, msgs in self.failed.items() if msgs]
        if self.recovered:
            out.append(f"{self.recovered} dead worker reservation(s) made pending again")
        return out


def populate_round(tables: Iterable[type[dj.Table]], *, progress: bool = False) -> RoundSummary:
    """Each table in turn (give them in dependency order): recover dead reservations, then
    ``populate(reserve_jobs=True, suppress_errors=True)``. Errors are recorded in the job tables
    (with their traceback) and do not stop the other keys or tables."""
    made, failed, recovered, pending = {}, {}, 0, 0
    for table in tables:
        instance = table()
        recovered += recover_dead_reservations(instance)
        result = instance.populate(reserve_jobs=True, suppress_errors=True, display_progress=progress)
        made[table.__name__] = result["success_count"]
        failed[table.__name__] = [str(message) for _, message in result["error_list"]]
        pending += len(instance.jobs.pending)
    return RoundSummary(made, failed, recovered, pending)


def work(load_tables, *, once: bool, sleep_s: float = 30.0, max_rounds: int | None = None,
         log=print, stop=lambda: False) -> list[RoundSummary]:
    """Rounds of :func:`populate_round` over ``load_tables()``: until a round is idle (``once``),
    else forever (or ``max_rounds``), sleeping ``sleep_s`` after an idle round."""
    import time

    tables = list(load_tables())
    rounds: list[RoundSummary] = []
    while not stop():
        summary = populate_round(tables)
        rounds.append(summary)
        for line in summary.lines():
            log(line)
        if max_rounds is not None and len(rounds) >= max_rounds:
            break
        if summary.idle:
            if once:
                break
            time.sleep(sleep_s)
    return rounds


def job_status(table: type[dj.Table]) -> dict:
    """Done, pending, errors and who holds each reservation (host, pid, connection) for one table."""
    jobs = table().jobs
    reserved = [{"host": r["host"], "pid": int(r["pid"]), "connection_id": int(r["connection_id"]),
                 "key": {k: r[k] for k in jobs.primary_key}} for r in jobs.reserved.to_dicts()]
    progress = jobs.progress()
    return {"table": table.__name__, "done": len(table()), "pending": progress.get("pending", 0),
            "reserved": reserved, "error": progress.get("error", 0), "ignore": progress.get("ignore", 0)}

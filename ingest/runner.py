"""Running an ingest table: DataJoint job reservation, recovery of dead workers, and a summary.

Any number of ``mapshell ingest-*`` processes, on any number of machines, can run this at once:
``populate(reserve_jobs=True)`` hands each key to exactly one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datajoint as dj

from pipeline.jobs import recover_dead_reservations


@dataclass
class IngestSummary:
    table: str
    inserted: int = 0
    skipped: int = 0          # already in before this run
    failed: int = 0
    recovered: int = 0        # dead workers' reservations made pending again
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.table}: {self.inserted} inserted, {self.skipped} already in, {self.failed} failed"
        if self.recovered:
            text += f", {self.recovered} interrupted job(s) resumed"
        return text


def run_ingest(table: type[dj.Table], *, progress: bool = True, max_calls: int | None = None) -> IngestSummary:
    """Populate ``table`` with job reservation; errors are recorded, not raised."""
    instance = table()
    summary = IngestSummary(table.__name__)
    summary.recovered = recover_dead_reservations(instance)
    summary.skipped = len(instance)
    result = instance.populate(reserve_jobs=True, suppress_errors=True, display_progress=progress, max_calls=max_calls)
    summary.inserted = result["success_count"]
    summary.errors = [str(message) for _, message in result["error_list"]]
    summary.failed = len(instance.jobs.errors)
    return summary

"""The one error type readers raise: it names the file and says what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class ReaderError(Exception):
    """A raw file that cannot be used: ``<path>: <reason>``."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

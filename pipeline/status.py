"""What the pipeline is connected to and what it holds: for ``mapshell db status``."""

from __future__ import annotations

import importlib
from typing import Iterator

import datajoint as dj

from . import config as _config
from . import db


def pipeline_tables(module) -> Iterator[type[dj.Table]]:
    """The table classes a schema module declares, parts after their master."""
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, dj.Table) and getattr(value, "database", None) == module.schema.database:
            yield value
            for part in vars(value).values():
                if isinstance(part, type) and issubclass(part, dj.Part):
                    yield part


def database_status(cfg: _config.PipelineConfig) -> list[str]:
    conn = db.connection(cfg)
    backend = db.backend()
    version = conn.query("SELECT version()").fetchone()[0]
    where = "embedded" if not cfg.host_configured else "server"
    lines = [
        f"backend: {backend} ({where})",
        f"server version: {version}",
        f"address: {dj.config['database.user']}@{dj.config['database.host']}:{dj.config['database.port']}",
        "schemas:",
    ]
    existing = set(dj.list_schemas(connection=conn))
    from .shell import SCHEMA_MODULES

    for name in SCHEMA_MODULES:
        schema_name = cfg.schema_name(name)
        if schema_name not in existing:
            lines.append(f"  {schema_name}: not created yet")
            continue
        module = importlib.import_module(f"pipeline.{name}")
        lines.append(f"  {schema_name}:")
        for table in pipeline_tables(module):
            label = table.__name__ if not issubclass(table, dj.Part) else f"{table._master.__name__}.{table.__name__}"
            lines.append(f"    {label:<32} {len(table()):>10} rows")
    return lines

"""Connecting DataJoint: a configured server as is, else the embedded PostgreSQL.

Schema modules call :func:`schema` at import; the first call resolves the configuration and
connects once per process.
"""

from __future__ import annotations

import logging
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "No datajoint.json found": we configure DataJoint ourselves
    import datajoint as dj

from . import config as _config
from .embedded import EmbeddedServer

log = logging.getLogger(__name__)

_connected_with: tuple | None = None


def configure_datajoint(cfg: _config.PipelineConfig) -> str:
    """Put the resolved settings into ``dj.config``; returns a description of the target."""
    dj.config["loglevel"] = str(cfg.get("loglevel", "WARNING")).upper()
    dj.config["safemode"] = bool(cfg.get("safemode", True))
    if cfg.host_configured:
        backend = cfg.get("database.backend") or "mysql"
        host = str(cfg.get("database.host"))
        port = cfg.get("database.port") or (5432 if backend == "postgresql" else 3306)
        if ":" in host and not host.startswith("["):
            host, port = host.rsplit(":", 1)
        user = cfg.get("database.user") or ("postgres" if backend == "postgresql" else "root")
        password = cfg.get("database.password") or ""
        where = f"{backend} server {host}:{port}"
    else:
        backend = "postgresql"
        info = EmbeddedServer(cfg.get("database.embedded_dir")).ensure_running()
        host, port, user, password = info.host, info.port, info.user, info.password
        where = f"embedded postgresql 127.0.0.1:{port}"
    dj.config["database.backend"] = backend
    dj.config["database.host"] = host
    dj.config["database.port"] = int(port)
    dj.config["database.user"] = user
    dj.config["database.password"] = password
    if backend == "postgresql":
        dj.config["database.use_tls"] = False
    return where


def connection(cfg: _config.PipelineConfig | None = None) -> dj.Connection:
    """The process's DataJoint connection, made on first use."""
    global _connected_with
    cfg = cfg or _config.active()
    key = (cfg.path, tuple(sorted((k, str(s.value)) for k, s in cfg.settings.items() if k.startswith("database"))))
    if _connected_with != key:
        configure_datajoint(cfg)
        _connected_with = key
        return dj.conn(reset=True)
    return dj.conn()


def backend() -> str:
    return str(dj.config["database.backend"])


def schema(module: str, context: dict | None = None) -> dj.Schema:
    """The DataJoint schema for a pipeline module (``lab`` -> ``map_lab`` unless configured)."""
    cfg = _config.active()
    conn = connection(cfg)
    return dj.Schema(cfg.schema_name(module), context=context, connection=conn)


def drop_schemas(prefix: str) -> list[str]:
    """Drop every schema whose name starts with ``prefix`` (a test or benchmark run's own);
    returns their names. Foreign keys between them do not stand in the way."""
    conn = connection()
    names = [name for name in dj.list_schemas(connection=conn) if name.startswith(prefix)]
    if backend() == "postgresql":
        for name in names:
            conn.query(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    else:
        conn.query("SET FOREIGN_KEY_CHECKS=0")
        try:
            for name in names:
                conn.query(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.query("SET FOREIGN_KEY_CHECKS=1")
    return names

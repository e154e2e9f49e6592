"""Test fixtures: a real database for every test that asks for one.

The backend is the one the environment names, as for the pipeline itself: ``DJ_HOST`` (with
``DJ_BACKEND``, ``DJ_USER``, ``DJ_PASS``) for a MySQL-family or PostgreSQL server, otherwise the
embedded PostgreSQL, started in a data directory of this run's own. Each run uses its own
schema prefix and drops its schemas at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

RUN_DIR = Path(tempfile.mkdtemp(prefix="map-tests-"))
os.chmod(RUN_DIR, 0o755)  # the embedded server account must be able to enter it
PREFIX = f"t{os.getpid()}{secrets.token_hex(2)}_"
EMPTY_CONFIG = RUN_DIR / "dj_local_conf.json"
EMPTY_CONFIG.write_text(json.dumps({"safemode": False}))

# Set before any pipeline module is imported, so they all see this run's settings.
os.environ["MAP_DB_PREFIX"] = PREFIX
os.environ["MAP_CONFIG"] = str(EMPTY_CONFIG)
if not os.environ.get("DJ_HOST"):
    os.environ.setdefault("MAP_EMBEDDED_DIR", str(RUN_DIR / "embedded"))


def backend_name() -> str:
    if not os.environ.get("DJ_HOST"):
        return "embedded"
    return "postgresql" if os.environ.get("DJ_BACKEND", "mysql").lower().startswith("postgres") else "mysql"


def pytest_report_header(config) -> str:
    return f"MAP test backend: {backend_name()} (schema prefix {PREFIX})"


@pytest.fixture(scope="session")
def modules():
    """Every pipeline schema module, declared in this run's schemas."""
    from pipeline.shell import load_schema_modules

    return load_schema_modules()


def _drop_run_schemas() -> None:
    from pipeline import db

    db.drop_schemas(PREFIX)


def pytest_sessionfinish(session, exitstatus) -> None:
    import sys

    if "pipeline.db" in sys.modules and sys.modules["pipeline.db"]._connected_with is not None:
        _drop_run_schemas()
    if os.environ.get("MAP_EMBEDDED_DIR", "").startswith(str(RUN_DIR)):
        from pipeline.embedded import EmbeddedServer

        EmbeddedServer(Path(os.environ["MAP_EMBEDDED_DIR"])).stop()
    shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture
def clean_lab(modules):
    """Leave the lab and experiment tables as the test found them: empty of manual rows."""
    yield modules
    lab = modules["lab"]
    for table in (lab.Surgery, lab.WaterRestriction, lab.Subject, lab.Virus, lab.Rig, lab.Person):
        table().delete(prompt=False)


# --- simulated shares --------------------------------------------------------------------------

def use_share_paths(manifest: dict) -> None:
    """Point the pipeline's configuration at a simulated share."""
    from pipeline import config

    config.set_active(config.load_config(check_paths=False).with_custom(manifest["paths"], "test"))


@pytest.fixture(scope="session")
def tiny_share():
    """A tiny simulated lab share (written once per run) and its manifest."""
    from ingest.simulator import simulate_share

    root = RUN_DIR / "tiny-share"
    return root, simulate_share(root, subjects=2, sessions=2, scale="tiny", seed=7)


# Ingest modules, downstream first: their key tables and job tables are emptied by the wipe.
INGEST_MODULES = ["ingest.histology", "ingest.ephys", "ingest.tracking", "ingest.behavior", "ingest.share"]


def wipe_pipeline_data(modules) -> None:
    """Delete everything ingest and manual entry put in, leaving lookups: tests start clean."""
    import importlib

    import datajoint as dj

    ingest_modules = [importlib.import_module(name) for name in INGEST_MODULES]
    for module in ingest_modules:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, (dj.Imported, dj.Computed)) and value.__module__ == module.__name__:
                value().jobs.delete_quick()
    modules["experiment"].Session().delete(prompt=False)  # cascades to everything made from sessions
    for module in ingest_modules:
        tables = [v for v in vars(module).values()
                  if isinstance(v, type) and issubclass(v, dj.Table) and not issubclass(v, dj.Part)
                  and v.__module__ == module.__name__]
        for table in reversed(tables):
            table().delete(prompt=False)
    lab = modules["lab"]
    for table in (lab.Surgery, lab.WaterRestriction, lab.Subject, lab.Rig, lab.Person):
        table().delete(prompt=False)

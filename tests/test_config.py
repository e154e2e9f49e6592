"""Configuration: MAP's dj_local_conf.json, environment overrides, masking, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

SECRET = "s3cret-Pa55word"


def write(tmp_path: Path, data, name: str = "dj_local_conf.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_precedence_default_file_env(tmp_path):
    share = tmp_path / "behavior"
    share.mkdir()
    path = write(tmp_path, {
        "database.host": "db.lab.org", "database.user": "alice", "database.password": SECRET, "database.port": 3307,
        "custom": {"database.prefix": "lab_", "ephys.database": "map_v2_ephys",
                   "behavior_data_paths": [["RRig", str(share), 0]]},
    })
    cfg = load_config(path, environ={"DJ_HOST": "override.lab.org"})
    assert cfg.get("database.host") == "override.lab.org"
    assert cfg.settings["database.host"].source == "env DJ_HOST"
    assert cfg.get("database.user") == "alice" and cfg.settings["database.user"].source == f"file {path}"
    assert cfg.get("database.port") == 3307
    assert cfg.get("loglevel") == "WARNING" and cfg.settings["loglevel"].source == "default"
    assert cfg.schema_name("lab") == "lab_lab" and cfg.schema_name("ephys") == "map_v2_ephys"
    assert cfg.data_paths("behavior_data_paths") == [("RRig", share, 0)]
    assert cfg.host_configured


def test_no_host_means_embedded(tmp_path):
    cfg = load_config(write(tmp_path, {}), environ={})
    assert not cfg.host_configured and cfg.prefix == "map_"


def test_config_file_lookup_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = write(tmp_path, {"custom": {"database.prefix": "cwd_"}})
    named = write(tmp_path, {"custom": {"database.prefix": "named_"}}, "other.json")
    assert load_config(environ={}).path == local
    assert load_config(environ={"MAP_CONFIG": str(named)}).prefix == "named_"
    with pytest.raises(ConfigError, match="MAP_CONFIG names .*missing.json, which is not a file"):
        load_config(environ={"MAP_CONFIG": str(tmp_path / "missing.json")})


def test_secrets_are_masked(tmp_path):
    path = write(tmp_path, {"database.password": SECRET, "custom": {"globus.client_secret": "gsecret", "globus.token": "tok"}})
    shown = {s.key: s.value for s in load_config(path, environ={}).masked()}
    assert shown["database.password"] == "****"
    assert shown["custom.globus.client_secret"] == "****" and shown["custom.globus.token"] == "****"
    assert SECRET not in repr(load_config(path, environ={}).masked())


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, '{\n  "database.host": "x",\n  "custom": {,}\n}')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(path) in str(err.value) and "line 3" in str(err.value)


def test_unknown_backend_names_key(tmp_path):
    path = write(tmp_path, {"database.backend": "oracle"})
    with pytest.raises(ConfigError, match=r"key 'database.backend' is 'oracle'; expected one of: mysql, postgresql") as err:
        load_config(path, environ={})
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="env DJ_BACKEND: key 'database.backend' is 'sqlite'"):
        load_config(write(tmp_path, {}), environ={"DJ_BACKEND": "sqlite"})


def test_missing_data_path_names_key(tmp_path):
    path = write(tmp_path, {"custom": {"ephys_data_paths": [["RRig", str(tmp_path / "nowhere"), 0]]}})
    with pytest.raises(ConfigError, match=r"key 'custom.ephys_data_paths\[0\]': path .*nowhere does not exist"):
        load_config(path, environ={})
    assert load_config(path, environ={}, check_paths=False).data_paths("ephys_data_paths")[0][0] == "RRig"


def _mapshell(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.shell", *args], capture_output=True, text=True, env=env, timeout=120)


def test_mapshell_config_masks_and_reports_sources(tmp_path):
    path = write(tmp_path, {"database.host": "127.0.0.1", "database.password": SECRET, "custom": {"database.prefix": "zz_"}})
    env = {**os.environ, "MAP_CONFIG": str(path), "DJ_USER": "bob"}
    env.pop("DJ_PASS", None)
    env.pop("MAP_DB_PREFIX", None)
    result = _mapshell("config", env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "'****'" in lines["database.password"] and f"file {path}" in lines["database.password"]
    assert "'bob'" in lines["database.user"] and "env DJ_USER" in lines["database.user"]
    assert "'zz_'" in lines["custom.database.prefix"]


def test_mapshell_bad_config_is_one_clear_line(tmp_path):
    path = write(tmp_path, {"database.backend": "oracle"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJ_")}  # DJ_BACKEND would override the file
    result = _mapshell("config", env={**env, "MAP_CONFIG": str(path)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert str(path) in result.stderr and "database.backend" in result.stderr


def test_example_config_loads_and_explains_every_key():
    path = Path(__file__).resolve().parents[1] / "dj_local_conf.example.json"
    data = json.loads(path.read_text())
    for block in (data, data["custom"]):
        for key in block:
            if not key.startswith("#") and key != "custom":
                assert f"#{key}" in block, f"{key} has no explanation"
    cfg = load_config(path, environ={}, check_paths=False)
    assert cfg.get("database.backend") == "mysql"
    assert cfg.custom("globus.storage_locations")["raw-ephys"]["root"] == "/4ElectrodeRig_Ephys"
    assert not [k for k in cfg.settings if "#" in k]


def test_overlaying_settings_leaves_the_original_alone(tmp_path):
    share = tmp_path / "ephys"
    share.mkdir()
    base = load_config(write(tmp_path, {"custom": {"database.prefix": "lab_"}}), environ={})
    demo = base.with_custom({"ephys_data_paths": [["RRig", str(share), 0]], "database.prefix": "demo_"}, "demo")
    strict = demo.with_settings({"safemode": False}, "bench")
    assert demo.prefix == "demo_" and demo.settings["custom.database.prefix"].source == "demo"
    assert demo.data_paths("ephys_data_paths") == [("RRig", share, 0)]
    assert strict.get("safemode") is False and strict.settings["safemode"].source == "bench" and strict.prefix == "demo_"
    assert base.prefix == "lab_" and base.custom("ephys_data_paths") is None and base.get("safemode") is True

"""The pipeline's configuration: MAP's ``dj_local_conf.json`` plus ``DJ_*`` environment variables.

DataJoint 2 reads only ``datajoint.json`` and forbids unknown keys, so MAP's file (with its
``custom`` block of rig-share paths and Globus settings) is read here and bridged into
``dj.config``. Every value remembers where it came from, so ``mapshell config`` can say so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import platformdirs

CONFIG_FILENAME = "dj_local_conf.json"
APP_NAME = "map-pipeline"
BACKENDS = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgresql", "postgres": "postgresql"}

# Environment variables that override the file, as DataJoint names them.
ENV_OVERRIDES = {
    "database.host": "DJ_HOST",
    "database.user": "DJ_USER",
    "database.password": "DJ_PASS",
    "database.port": "DJ_PORT",
    "database.backend": "DJ_BACKEND",
}
# Our own: a schema-name prefix for this process (tests use it to keep runs apart).
PREFIX_ENV = "MAP_DB_PREFIX"

DATA_PATH_KEYS = (
    "behavior_data_paths",
    "ephys_data_paths",
    "tracking_data_paths",
    "video_data_paths",
    "histology_data_paths",
    "ccf_data_paths",
)
SECRET_WORDS = ("password", "secret", "token")

DEFAULTS: dict[str, Any] = {
    "database.host": None,
    "database.user": None,
    "database.password": None,
    "database.port": None,
    "database.backend": None,
    "database.embedded_dir": None,
    "loglevel": "WARNING",
    "safemode": True,
    "custom.database.prefix": "map_",
}


class ConfigError(Exception):
    """A configuration problem, worded for the user: which file, which key, what is wrong."""


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str  # "default", "file <path>", "env DJ_HOST"


@dataclass
class PipelineConfig:
    """Resolved settings (flat keys; ``custom.<key>`` for the custom block) with their sources."""

    settings: dict[str, Setting] = field(default_factory=dict)
    path: Path | None = None

    def get(self, key: str, default: Any = None) -> Any:
        setting = self.settings.get(key)
        return default if setting is None or setting.value is None else setting.value

    def custom(self, key: str, default: Any = None) -> Any:
        return self.get(f"custom.{key}", default)

    @property
    def custom_dict(self) -> dict[str, Any]:
        return {k[len("custom."):]: s.value for k, s in self.settings.items() if k.startswith("custom.")}

    @property
    def host_configured(self) -> bool:
        return bool(self.get("database.host"))

    @property
    def prefix(self) -> str:
        return self.custom("database.prefix", "map_")

    def schema_name(self, module: str) -> str:
        """MAP's naming: ``custom['<module>.database']`` if set, else prefix + module."""
        return self.custom(f"{module}.database") or f"{self.prefix}{module}"

    def data_paths(self, key: str) -> list[tuple[str, Path, int]]:
        """``[rig, path, order]`` entries of a ``*_data_paths`` key, sorted by order."""
        entries = self.custom(key) or []
        return sorted(((str(r), Path(p), int(o)) for r, p, o in entries), key=lambda e: e[2])

    def with_settings(self, values: Mapping[str, Any], source: str) -> "PipelineConfig":
        """A copy with these settings (full keys, e.g. ``safemode`` or ``custom.ephys_data_paths``)
        overlaid, each remembering ``source``: how the demo, tests and benchmarks point the
        pipeline at a share without writing a config file."""
        settings = dict(self.settings)
        settings.update({key: Setting(key, value, source) for key, value in values.items()})
        return PipelineConfig(settings, self.path)

    def with_custom(self, values: Mapping[str, Any], source: str) -> "PipelineConfig":
        """``with_settings`` for keys of the ``custom`` block (``behavior_data_paths``, ``globus.*``, ...)."""
        return self.with_settings({f"custom.{key}": value for key, value in values.items()}, source)

    def masked(self) -> list[Setting]:
        """Every setting, secrets replaced by ``****``: safe to print."""
        return [
            Setting(s.key, mask(s.key, s.value), s.source) for s in sorted(self.settings.values(), key=lambda s: s.key)
        ]


def mask(key: str, value: Any) -> Any:
    if value in (None, "") or not any(word in key.lower() for word in SECRET_WORDS):
        return value
    return "****"


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME))


def find_config_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """``MAP_CONFIG`` if set, else ``./dj_local_conf.json``, else the user's config directory."""
    named = environ.get("MAP_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"MAP_CONFIG names {path}, which is not a file")
        return path
    for candidate in (Path.cwd() / CONFIG_FILENAME, user_config_dir() / CONFIG_FILENAME):
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: JSON syntax error at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    custom = data.pop("custom", {}) or {}
    if not isinstance(custom, dict):
        raise ConfigError(f"{path}: key 'custom' must be an object")
    # Keys starting with '#' are explanations (see dj_local_conf.example.json), not settings.
    flat = {k: v for k, v in data.items() if not k.startswith("#")}
    flat.update({f"custom.{k}": v for k, v in custom.items() if not k.startswith("#")})
    return flat


def load_config(
    path: Path | None = None, environ: Mapping[str, str] = os.environ, *, check_paths: bool = True
) -> PipelineConfig:
    """Resolve defaults < config file < environment, then validate.

    ``check_paths`` verifies that every ``*_data_paths`` entry exists; the schema modules skip it
    so that a share that is unmounted today does not stop anyone from querying.
    """
    path = path or find_config_file(environ)
    settings = {k: Setting(k, v, "default") for k, v in DEFAULTS.items()}
    if path is not None:
        for key, value in _read_file(path).items():
            settings[key] = Setting(key, value, f"file {path}")
    for key, var in ENV_OVERRIDES.items():
        if environ.get(var) not in (None, ""):
            settings[key] = Setting(key, environ[var], f"env {var}")
    if environ.get(PREFIX_ENV):
        settings["custom.database.prefix"] = Setting("custom.database.prefix", environ[PREFIX_ENV], f"env {PREFIX_ENV}")
    config = PipelineConfig(settings, path)
    _validate(config, check_paths)
    return config


def _where(config: PipelineConfig, key: str) -> str:
    source = config.settings[key].source
    return source.removeprefix("file ") if source.startswith("file ") else source


def _validate(config: PipelineConfig, check_paths: bool) -> None:
    backend = config.get("database.backend")
    if backend is not None:
        if str(backend).lower() not in BACKENDS:
            raise ConfigError(
                f"{_where(config, 'database.backend')}: key 'database.backend' is {backend!r}; "
                f"expected one of: mysql, postgresql"
            )
        config.settings["database.backend"] = Setting(
            "database.backend", BACKENDS[str(backend).lower()], config.settings["database.backend"].source
        )
    port = config.get("database.port")
    if port is not None:
        try:
            port_number = int(port)
        except (TypeError, ValueError):
            raise ConfigError(f"{_where(config, 'database.port')}: key 'database.port' is {port!r}, not a number") from None
        config.settings["database.port"] = Setting("database.port", port_number, config.settings["database.port"].source)
    for key in DATA_PATH_KEYS:
        full = f"custom.{key}"
        entries = config.get(full)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ConfigError(f"{_where(config, full)}: key 'custom.{key}' must be a list of [rig, path, order]")
        for i, entry in enumerate(entries):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise ConfigError(
                    f"{_where(config, full)}: key 'custom.{key}[{i}]' is {entry!r}; expected [rig, path, order]"
                )
            if check_paths and not Path(entry[1]).is_dir():
                raise ConfigError(
                    f"{_where(config, full)}: key 'custom.{key}[{i}]': path {entry[1]} does not exist or is not a folder"
                )


_active: PipelineConfig | None = None


def active(*, check_paths: bool = False) -> PipelineConfig:
    """The process-wide configuration, loaded once."""
    global _active
    if _active is None:
        _active = load_config(check_paths=check_paths)
    return _active


def set_active(config: PipelineConfig | None) -> None:
    """Replace the process-wide configuration (the CLI and tests do this)."""
    global _active
    _active = config

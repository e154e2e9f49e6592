"""Build a TransferBackend from the pipeline's flat ``custom`` settings.

Keys follow MAP's ``dj_local_conf.json`` (``globus.local_endpoint`` ...), plus
``globus.backend`` to pick the local endpoint instead of Globus.  Every error
names the key that is missing or wrong.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from .base import TransferBackend, TransferError, normalize_remote_path
from .local import LocalBackend

DEFAULT_TOKEN_FILE = "~/.config/map-pipeline/globus-tokens.json"


@dataclasses.dataclass(frozen=True)
class StorageLocation:
    """Where one archive type lives: MAP's ``raw-ephys`` -> endpoint + root path."""

    name: str
    endpoint: str
    root: str

    def remote(self, *parts: str) -> str:
        """Remote path of ``parts`` under the root (each part checked)."""
        return normalize_remote_path("/".join([self.root, *parts]))


@dataclasses.dataclass(frozen=True)
class LocalEndpoint:
    """The lab's own endpoint: Globus path ``subdir`` is ``local_path`` on disk."""

    endpoint: str
    subdir: str
    local_path: Path

    def remote_path(self, relative: str) -> str:
        return normalize_remote_path(f"/{self.subdir}/{relative}")

    def local_file(self, relative: str) -> Path:
        parts = [p for p in PurePosixPath(normalize_remote_path("/" + relative)).parts if p != "/"]
        return self.local_path.joinpath(*parts)


def _get(custom: Mapping[str, Any], key: str, default: Any = ..., kind: type | tuple[type, ...] = str) -> Any:
    if key not in custom or custom[key] in (None, ""):
        if default is ...:
            raise TransferError(f"missing setting '{key}' in the pipeline's custom config")
        return default
    value = custom[key]
    if not isinstance(value, kind):
        raise TransferError(
            f"setting '{key}' should be {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value


def default_state_dir() -> Path:
    """Per-user cache dir (platformdirs), e.g. ~/.cache/map-pipeline/transfer-tasks."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("map-pipeline")) / "transfer-tasks"


def storage_locations(custom: Mapping[str, Any]) -> dict[str, StorageLocation]:
    """``globus.storage_locations`` as typed objects."""
    raw = _get(custom, "globus.storage_locations", kind=dict)
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, Mapping) or not spec.get("endpoint") or not spec.get("root"):
            raise TransferError(
                f"setting 'globus.storage_locations' entry {name!r} needs 'endpoint' and 'root'"
            )
        try:
            root = normalize_remote_path(str(spec["root"]))
        except TransferError as err:
            raise TransferError(f"setting 'globus.storage_locations' entry {name!r}: {err}") from None
        out[name] = StorageLocation(name=name, endpoint=str(spec["endpoint"]), root=root)
    return out


def local_endpoint(custom: Mapping[str, Any]) -> LocalEndpoint:
    """MAP's ``globus.local_endpoint*`` triple."""
    subdir = str(_get(custom, "globus.local_endpoint_subdir", "")).strip("/")
    try:
        normalize_remote_path("/" + subdir)
    except TransferError as err:
        raise TransferError(f"setting 'globus.local_endpoint_subdir': {err}") from None
    return LocalEndpoint(
        endpoint=_get(custom, "globus.local_endpoint"),
        subdir=subdir,
        local_path=Path(_get(custom, "globus.local_endpoint_local_path")).expanduser(),
    )


def backend_from_settings(custom: Mapping[str, Any]) -> TransferBackend:
    """The configured backend: ``globus.backend`` = 'globus' (default) or 'local'."""
    kind = _get(custom, "globus.backend", "globus")
    if kind == "local":
        collections = _get(custom, "globus.local_collections", kind=dict)
        for cid, directory in collections.items():
            if not isinstance(directory, (str, os.PathLike)) or not Path(directory).expanduser().is_dir():
                raise TransferError(
                    f"setting 'globus.local_collections': directory for collection {cid!r} "
                    f"does not exist: {directory!r}"
                )
        state_dir = Path(_get(custom, "globus.local_state_dir", str(default_state_dir()))).expanduser()
        limit = _get(custom, "globus.local_max_bytes_per_second", None, kind=(int, float))
        return LocalBackend(collections, state_dir, max_bytes_per_second=limit)
    if kind != "globus":
        raise TransferError(f"setting 'globus.backend' must be 'globus' or 'local', got {kind!r}")

    from . import auth
    from .globus import GlobusBackend

    secret_file = _get(custom, "globus.client_secret_file", None)
    creds = auth.confidential_credentials(secret_file=secret_file)
    if creds is not None:
        return GlobusBackend(auth.transfer_client_from_confidential(*creds))
    client_id = _get(custom, "globus.client_id")
    token_file = _get(custom, "globus.token_file", DEFAULT_TOKEN_FILE)
    return GlobusBackend(auth.transfer_client_from_tokens(client_id, token_file))

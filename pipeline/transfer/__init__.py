"""Transfer layer: Globus (globus-sdk 4.x) or a local endpoint behind one interface.

Modules: ``base`` (interface, values, errors), ``globus`` (TransferClient backend),
``local`` + ``local_worker`` (directory-per-collection backend with detached task
workers), ``manager`` (MAP's ``GlobusStorageManager``), ``auth`` (login, token
file), ``config`` (backend from the pipeline's custom settings) and ``testing``
(an offline fake of the Globus Transfer API for tests).

Globus-dependent names are imported lazily so the local worker starts fast and
does not need globus-sdk.
"""

from __future__ import annotations

from typing import Any

from .base import (
    AlreadyExists,
    AuthError,
    Entry,
    NotFound,
    PathEscapeError,
    TaskFailed,
    TaskStatus,
    TransferBackend,
    TransferError,
    TransferItem,
)
from .local import LocalBackend
from .manager import GlobusStorageManager, md5_file

_LAZY = {
    "GlobusBackend": ".globus",
    "backend_from_settings": ".config",
    "login_native": ".auth",
    "transfer_client_from_tokens": ".auth",
    "transfer_client_from_confidential": ".auth",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AlreadyExists",
    "AuthError",
    "Entry",
    "GlobusBackend",
    "GlobusStorageManager",
    "LocalBackend",
    "NotFound",
    "PathEscapeError",
    "TaskFailed",
    "TaskStatus",
    "TransferBackend",
    "TransferError",
    "TransferItem",
    "backend_from_settings",
    "login_native",
    "md5_file",
    "transfer_client_from_confidential",
    "transfer_client_from_tokens",
]

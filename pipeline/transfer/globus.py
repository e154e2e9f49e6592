"""TransferBackend on globus-sdk 4.x ``TransferClient``.

The only module that knows Globus request/response shapes and error codes.
Notes that cost time to learn (see ARCHITECTURE.md):
- ``task_wait`` returns True for FAILED tasks too; success is re-read from ``get_task``.
- ``TransferData`` takes endpoints by keyword; v4 has no endpoint activation.
- error messages built here never include tokens (we only ever echo codes,
  paths and Globus' own messages).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import globus_sdk

from .base import (
    AlreadyExists,
    AuthError,
    Entry,
    NotFound,
    TaskStatus,
    TransferBackend,
    TransferError,
    TransferItem,
    check_sync_level,
    normalize_remote_path,
    validate_name,
)

log = logging.getLogger(__name__)

_AUTH_CODES = {"AuthenticationFailed", "ConsentRequired", "invalid_grant", "AuthorizationRequired"}


def _describe_api_error(err: globus_sdk.GlobusAPIError) -> str:
    return f"{err.http_status} {err.code or ''}: {err.message or err.http_reason}".strip()


def translate_api_error(err: globus_sdk.GlobusAPIError, context: str) -> TransferError:
    """Map a GlobusAPIError to our typed errors (auth -> AuthError, 404 -> NotFound)."""
    consent = err.info.consent_required
    authz = err.info.authorization_parameters
    if consent:
        scopes = ", ".join(consent.required_scopes)
        return AuthError(f"{context}: Globus needs your consent for scopes [{scopes}]")
    if authz:
        return AuthError(
            f"{context}: Globus requires a new login ({authz.session_message or 'session requirements'})"
        )
    is_auth_service = isinstance(err, globus_sdk.AuthAPIError)
    if err.http_status == 401 or err.code in _AUTH_CODES or (
        is_auth_service and err.http_status in (400, 401, 403)
    ):
        return AuthError(
            f"{context}: Globus credentials are missing, expired or revoked ({err.code or err.http_status})"
        )
    if err.http_status == 404 or (err.code or "").endswith("NotFound"):
        return NotFound(f"{context}: {_describe_api_error(err)}")
    if "Exists" in (err.code or ""):
        return AlreadyExists(f"{context}: {_describe_api_error(err)}")
    return TransferError(f"{context}: {_describe_api_error(err)}")


@contextlib.contextmanager
def _api(context: str) -> Iterator[None]:
    try:
        yield
    except globus_sdk.GlobusAPIError as err:
        raise translate_api_error(err, context) from err


def _parse_mtime(value: Any) -> float | None:
    """Globus 'last_modified' ('2023-02-01 12:00:00+00:00') -> POSIX seconds."""
    if not value:
        return None
    try:
        stamp = _dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return stamp.timestamp()


def _entry(doc: Mapping[str, Any]) -> Entry:
    kind = "dir" if doc.get("type") == "dir" else "file"
    return Entry(
        name=validate_name(doc["name"]),
        type=kind,
        size=int(doc.get("size") or 0),
        mtime=_parse_mtime(doc.get("last_modified")),
    )


class GlobusBackend(TransferBackend):
    """Backend that forwards every operation to a globus-sdk ``TransferClient``."""

    def __init__(self, client: globus_sdk.TransferClient) -> None:
        self.client = client

    # -- synchronous file operations
    def ls(self, endpoint: str, path: str) -> list[Entry]:
        path = normalize_remote_path(path)
        with _api(f"listing {endpoint}:{path}"):
            response = self.client.operation_ls(endpoint, path=path)
        return [_entry(doc) for doc in response]

    def stat(self, endpoint: str, path: str) -> Entry | None:
        path = normalize_remote_path(path)
        try:
            with _api(f"stat {endpoint}:{path}"):
                doc = self.client.operation_stat(endpoint, path=path)
        except NotFound:
            return None
        if path == "/":
            return Entry(name="/", type="dir", size=0, mtime=_parse_mtime(doc.get("last_modified")))
        return _entry(doc)

    def mkdir(self, endpoint: str, path: str) -> None:
        path = normalize_remote_path(path)
        with _api(f"mkdir {endpoint}:{path}"):
            self.client.operation_mkdir(endpoint, path=path)

    def rename(self, endpoint: str, old: str, new: str) -> None:
        old, new = normalize_remote_path(old), normalize_remote_path(new)
        with _api(f"rename {endpoint}:{old} -> {new}"):
            self.client.operation_rename(endpoint, oldpath=old, newpath=new)

    # -- tasks
    def submission_id(self) -> str:
        with _api("requesting a submission id"):
            return str(self.client.get_submission_id()["value"])

    def delete(
        self, endpoint: str, paths: Sequence[str], recursive: bool = False, *, label: str | None = None
    ) -> str:
        data = globus_sdk.DeleteData(
            endpoint,
            recursive=recursive,
            submission_id=self.submission_id(),
            **({"label": label} if label else {}),
        )
        for p in paths:
            data.add_item(normalize_remote_path(p))
        with _api(f"submitting delete on {endpoint}"):
            return str(self.client.submit_delete(data)["task_id"])

    def submit_transfer(
        self,
        source_endpoint: str,
        destination_endpoint: str,
        items: Iterable[TransferItem],
        *,
        submission_id: str,
        label: str | None = None,
        sync_level: str | None = None,
        verify_checksum: bool = True,
    ) -> str:
        items = list(items)
        if not items:
            raise TransferError("a transfer needs at least one item")
        if not submission_id:
            raise TransferError("submission_id is required (get one with submission_id() and store it first)")
        level = check_sync_level(sync_level)
        options: dict[str, Any] = {}
        if label:
            options["label"] = label
        if level is not None:
            options["sync_level"] = level
        data = globus_sdk.TransferData(
            source_endpoint=source_endpoint,
            destination_endpoint=destination_endpoint,
            submission_id=submission_id,
            verify_checksum=verify_checksum,
            preserve_timestamp=True,
            **options,
        )
        for item in items:
            extra: dict[str, Any] = {}
            if item.external_checksum:
                extra["external_checksum"] = item.external_checksum
                extra["checksum_algorithm"] = item.checksum_algorithm
            data.add_item(
                normalize_remote_path(item.source_path),
                normalize_remote_path(item.destination_path),
                recursive=item.recursive,
                **extra,
            )
        with _api(f"submitting transfer {source_endpoint} -> {destination_endpoint}"):
            result = self.client.submit_transfer(data)
        if result.get("code") == "Duplicate":
            log.info("submission %s was already accepted as task %s", submission_id, result["task_id"])
        return str(result["task_id"])

    def _faults(self, task_id: str) -> tuple[str, ...]:
        with _api(f"reading events of task {task_id}"):
            events = self.client.task_event_list(task_id, limit=100)
        faults = []
        for ev in events:
            if not ev.get("is_error", True):
                continue
            text = f"{ev.get('code', 'ERROR')}: {ev.get('description', '')}"
            if ev.get("details"):
                text += f" ({ev['details']})"
            faults.append(text)
        return tuple(faults)

    def task_status(self, task_id: str) -> TaskStatus:
        with _api(f"reading task {task_id}"):
            doc = self.client.get_task(task_id)
        status = doc["status"]
        faults: tuple[str, ...] = ()
        if status != "SUCCEEDED" and (status == "FAILED" or doc.get("faults")):
            faults = self._faults(task_id)
        fatal = doc.get("fatal_error")
        if isinstance(fatal, Mapping):
            fatal = f"{fatal.get('code', 'ERROR')}: {fatal.get('description', '')}"
        return TaskStatus(
            task_id=str(doc.get("task_id", task_id)),
            status=status,
            nice_status=doc.get("nice_status"),
            files=int(doc.get("files") or 0),
            files_transferred=int(doc.get("files_transferred") or 0),
            bytes_transferred=int(doc.get("bytes_transferred") or 0),
            faults=faults,
            fatal_error=fatal,
            label=doc.get("label"),
            files_skipped=int(doc.get("files_skipped") or 0),
        )

    def wait(self, task_id: str, *, timeout: float = 3600, poll_interval: float = 10) -> TaskStatus:
        # task_wait wants whole seconds >= 1 and says True for FAILED tasks as
        # well: it only tells us the task left ACTIVE, so re-read the status.
        with _api(f"waiting for task {task_id}"):
            self.client.task_wait(
                task_id,
                timeout=max(1, math.ceil(timeout)),
                polling_interval=max(1, math.ceil(poll_interval)),
            )
        return self.task_status(task_id)

"""An in-memory fake of the Globus Transfer API (v0.10) for offline tests.

It answers the real HTTP paths the globus-sdk ``TransferClient`` calls, through the
``responses`` package (a test-only dependency), so ``GlobusBackend`` is exercised
end to end: request building, response parsing, error mapping.  Tasks complete at
submission, with the documented Globus semantics: sync levels 0-3, external
checksum verification failing the whole task, duplicate submission ids returning
the existing task, delete needing ``recursive`` for directories.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

BASE = "https://transfer.api.globus.org/v0.10"


def _stamp(mtime: float) -> str:
    return _dt.datetime.fromtimestamp(int(mtime), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00:00")


def _norm(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _parent(path: str) -> str:
    return _norm(path.rsplit("/", 1)[0] or "/")


class FakeTransferService:
    """State of a fake Transfer service: per-endpoint file trees and tasks."""

    def __init__(self, endpoints: list[str]) -> None:
        self.fs: dict[str, dict[str, dict[str, Any]]] = {
            ep: {"/": {"type": "dir", "mtime": time.time()}} for ep in endpoints
        }
        self.tasks: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.submissions: dict[str, str] = {}
        self.valid_tokens: set[str] | None = None  # None: accept any bearer token

    # -- helpers for tests
    def put_file(self, endpoint: str, path: str, data: bytes, mtime: float | None = None) -> None:
        path = _norm(path)
        self._mkdirs(endpoint, _parent(path))
        self.fs[endpoint][path] = {"type": "file", "data": bytes(data), "mtime": mtime or time.time()}

    def read_file(self, endpoint: str, path: str) -> bytes | None:
        node = self.fs[endpoint].get(_norm(path))
        return node["data"] if node and node["type"] == "file" else None

    def _mkdirs(self, endpoint: str, path: str) -> None:
        tree = self.fs[endpoint]
        cur = ""
        for part in [p for p in path.split("/") if p]:
            cur += "/" + part
            tree.setdefault(cur, {"type": "dir", "mtime": time.time()})

    # -- HTTP plumbing
    def register(self, rsps: Any) -> "FakeTransferService":
        """Register callbacks on a ``responses.RequestsMock`` (or the ``responses`` module)."""
        ep = r"(?P<ep>[^/]+)"
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/submission_id", self._submission_id),
            ("GET", rf"/operation/endpoint/{ep}/ls", self._ls),
            ("GET", rf"/operation/endpoint/{ep}/stat", self._stat),
            ("POST", rf"/operation/endpoint/{ep}/mkdir", self._mkdir),
            ("POST", rf"/operation/endpoint/{ep}/rename", self._rename),
            ("POST", r"/transfer", self._transfer),
            ("POST", r"/delete", self._delete),
            ("GET", r"/task/(?P<task>[^/?]+)/event_list", self._event_list),
            ("GET", r"/task/(?P<task>[^/?]+)", self._get_task),
        ]
        for method, pattern, handler in routes:
            regex = re.compile(re.escape(BASE) + pattern + r"(\?.*)?$")
            rsps.add_callback(method, regex, callback=self._wrap(regex, handler),
                              content_type="application/json")
        return self

    def _wrap(self, regex: re.Pattern[str], handler: Callable[..., tuple[int, dict[str, Any]]]) -> Callable[..., Any]:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            auth = request.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            if token is None or (self.valid_tokens is not None and token not in self.valid_tokens):
                return 401, {}, json.dumps({"code": "AuthenticationFailed", "message": "Token is not active"})
            match = regex.match(request.url)
            assert match is not None
            query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
            body = json.loads(request.body) if request.body else {}
            kwargs = {k: v for k, v in match.groupdict().items() if v is not None}
            status, doc = handler(query=query, body=body, **kwargs)
            return status, {}, json.dumps(doc)

        return callback

    @staticmethod
    def _err(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        return status, {"code": code, "message": message, "request_id": "fake"}

    def _tree(self, ep: str) -> dict[str, dict[str, Any]] | None:
        return self.fs.get(ep)

    def _doc(self, path: str, node: dict[str, Any]) -> dict[str, Any]:
        return {
            "DATA_TYPE": "file",
            "name": path.rsplit("/", 1)[-1] or "/",
            "type": node["type"],
            "size": len(node.get("data", b"")),
            "last_modified": _stamp(node["mtime"]),
            "permissions": "0644",
        }

    # -- operations
    def _submission_id(self, **_: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"DATA_TYPE": "submission_id", "value": str(uuid.uuid4())}

    def _ls(self, ep: str, query: dict[str, str], **_: Any) -> tuple[int, dict[str, Any]]:
        tree = self._tree(ep)
        if tree is None:
            return self._err(404, "EndpointNotFound", f"No such endpoint {ep}")
        path = _norm(query.get("path", "/"))
        node = tree.get(path)
        if node is None:
            return self._err(404, "ClientError.NotFound", f"Directory '{path}' not found")
        if node["type"] != "dir":
            return self._err(400, "ExternalError.DirListingFailed.NotDirectory", f"'{path}' is not a directory")
        prefix = path.rstrip("/") + "/"
        children = sorted(
            p for p in tree if p != path and p.startswith(prefix) and "/" not in p[len(prefix):]
        )
        data = [self._doc(p, tree[p]) for p in children]
        return 200, {"DATA_TYPE": "file_list", "DATA": data, "path": path, "endpoint": ep,
                     "length": len(data), "total": len(data), "offset": 0, "limit": 100000}

    def _stat(self, ep: str, query: dict[str, str], **_: Any) -> tuple[int, dict[str, Any]]:
        tree = self._tree(ep)
        if tree is None:
            return self._err(404, "EndpointNotFound", f"No such endpoint {ep}")
        path = _norm(query.get("path", "/"))
        node = tree.get(path)
        if node is None:
            return self._err(404, "NotFound", f"'{path}' not found")
        return 200, self._doc(path, node)

    def _mkdir(self, ep: str, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        tree = self._tree(ep)
        if tree is None:
            return self._err(404, "EndpointNotFound", f"No such endpoint {ep}")
        path = _norm(body["path"])
        if path in tree:
            return self._err(502, "ExternalError.MkdirFailed.Exists", f"Path already exists, '{path}'")
        if tree.get(_parent(path), {}).get("type") != "dir":
            return self._err(404, "ClientError.NotFound", f"Parent of '{path}' not found")
        tree[path] = {"type": "dir", "mtime": time.time()}
        return 202, {"DATA_TYPE": "mkdir_result", "code": "DirectoryCreated", "message": "created"}

    def _rename(self, ep: str, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        tree = self._tree(ep)
        if tree is None:
            return self._err(404, "EndpointNotFound", f"No such endpoint {ep}")
        old, new = _norm(body["old_path"]), _norm(body["new_path"])
        if old not in tree:
            return self._err(404, "ClientError.NotFound", f"'{old}' not found")
        if new in tree:
            return self._err(502, "ExternalError.RenameFailed.Exists", f"'{new}' exists")
        for p in sorted(p for p in tree if p == old or p.startswith(old + "/")):
            tree[new + p[len(old):]] = tree.pop(p)
        return 200, {"DATA_TYPE": "result", "code": "FileRenamed", "message": "renamed"}

    def _new_task(self, body: dict[str, Any], kind: str) -> tuple[str, bool]:
        sid = body.get("submission_id")
        if sid in self.submissions:
            return self.submissions[sid], True
        task_id = str(uuid.uuid4())
        self.submissions[sid] = task_id
        self.tasks[task_id] = {
            "DATA_TYPE": "task", "task_id": task_id, "type": kind, "status": "ACTIVE",
            "label": body.get("label"), "files": 0, "files_transferred": 0, "files_skipped": 0,
            "bytes_transferred": 0, "faults": 0, "fatal_error": None, "nice_status": "Queued",
            "submission_id": sid,
        }
        self.events[task_id] = []
        return task_id, False

    def _fail(self, task_id: str, code: str, description: str, details: str) -> None:
        task = self.tasks[task_id]
        task.update(status="FAILED", nice_status=None, faults=task["faults"] + 1,
                    fatal_error={"code": code, "description": description})
        self.events[task_id].append({"DATA_TYPE": "event", "code": code, "is_error": True,
                                     "description": description, "details": details,
                                     "time": _stamp(time.time())})

    def _transfer(self, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        if body.get("DATA_TYPE") != "transfer" or not body.get("submission_id"):
            return self._err(400, "ClientError.BadRequest", "bad transfer document")
        task_id, duplicate = self._new_task(body, "TRANSFER")
        if duplicate:
            return 200, {"DATA_TYPE": "transfer_result", "code": "Duplicate", "task_id": task_id,
                         "submission_id": body["submission_id"]}
        self._run_transfer(task_id, body)
        return 202, {"DATA_TYPE": "transfer_result", "code": "Accepted", "task_id": task_id,
                     "submission_id": body["submission_id"]}

    def _run_transfer(self, task_id: str, body: dict[str, Any]) -> None:
        task = self.tasks[task_id]
        src, dst = self.fs.get(body["source_endpoint"]), self.fs.get(body["destination_endpoint"])
        if src is None or dst is None:
            self._fail(task_id, "ENDPOINT_NOT_FOUND", "endpoint not found", "unknown endpoint")
            return
        plan = []
        for item in body["DATA"]:
            sp, dp = _norm(item["source_path"]), _norm(item["destination_path"])
            if item.get("recursive"):
                for p in sorted(p for p in src if p.startswith(sp.rstrip("/") + "/")):
                    if src[p]["type"] == "file":
                        plan.append((p, dp + p[len(sp):], None))
            else:
                plan.append((sp, dp, item.get("external_checksum")))
        task["files"] = len(plan)
        level = body.get("sync_level")
        for sp, dp, expected in plan:
            node = src.get(sp)
            if node is None or node["type"] != "file":
                self._fail(task_id, "FILE_NOT_FOUND", "file not found", f"source {sp} not found")
                return
            digest = hashlib.md5(node["data"]).hexdigest()
            have = dst.get(dp)
            if level is not None and have is not None and have["type"] == "file":
                same = {
                    0: True,
                    1: len(have["data"]) == len(node["data"]),
                    2: int(node["mtime"]) <= int(have["mtime"]),
                    3: hashlib.md5(have["data"]).hexdigest() == digest,
                }[int(level)]
                if same:
                    task["files_skipped"] += 1
                    continue
            if body.get("verify_checksum") and expected and expected.lower() != digest:
                self._fail(task_id, "CHECKSUM_MISMATCH", "checksum verification failed",
                           f"{sp}: expected {expected}, computed {digest}")
                return
            self._mkdirs(body["destination_endpoint"], _parent(dp))
            dst[dp] = {"type": "file", "data": node["data"],
                       "mtime": node["mtime"] if body.get("preserve_timestamp") else time.time()}
            task["files_transferred"] += 1
            task["bytes_transferred"] += len(node["data"])
        task.update(status="SUCCEEDED", nice_status=None)

    def _delete(self, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        if body.get("DATA_TYPE") != "delete" or not body.get("submission_id"):
            return self._err(400, "ClientError.BadRequest", "bad delete document")
        task_id, duplicate = self._new_task(body, "DELETE")
        if not duplicate:
            tree = self.fs.get(body["endpoint"], {})
            for item in body["DATA"]:
                path = _norm(item["path"])
                node = tree.get(path)
                if node is None:
                    self._fail(task_id, "FILE_NOT_FOUND", "file not found", f"{path} not found")
                    break
                if node["type"] == "dir" and not body.get("recursive"):
                    self._fail(task_id, "NOT_RECURSIVE", "directory needs recursive", path)
                    break
                for p in [p for p in tree if p == path or p.startswith(path + "/")]:
                    del tree[p]
            else:
                self.tasks[task_id].update(status="SUCCEEDED", nice_status=None)
        return 202, {"DATA_TYPE": "delete_result", "code": "Accepted", "task_id": task_id}

    def _get_task(self, task: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if task not in self.tasks:
            return self._err(404, "TaskNotFound", f"Task {task} not found")
        return 200, dict(self.tasks[task])

    def _event_list(self, task: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if task not in self.tasks:
            return self._err(404, "TaskNotFound", f"Task {task} not found")
        data = list(reversed(self.events[task]))
        return 200, {"DATA_TYPE": "event_list", "DATA": data, "total": len(data),
                     "offset": 0, "limit": 100}

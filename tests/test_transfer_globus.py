"""GlobusBackend specifics: request bodies, error mapping, unsafe remote names."""

from __future__ import annotations

import json

import globus_sdk
import pytest
import responses
from globus_sdk.testing import RegisteredResponse, get_last_request, load_response
from globus_sdk.transport import RetryConfig

from pipeline.transfer import AuthError, NotFound, PathEscapeError, TransferItem
from pipeline.transfer.globus import GlobusBackend
from pipeline.transfer.testing import FakeTransferService

EP = "5b875fda-4185-11e8-bb52-0ac6873fc732"
DST = "c40e971d-0075-4a82-b12f-8f9717762e7b"
FAKE_TOKEN = "FAKE-ACCESS-TOKEN-0123456789abcdef"
HINT = "mapshell publication-login"


def make_backend() -> GlobusBackend:
    client = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(FAKE_TOKEN),
        retry_config=RetryConfig(max_retries=0),
    )
    return GlobusBackend(client)


@responses.activate
def test_submitted_body_has_checksums_and_submission_id() -> None:
    meta = load_response(globus_sdk.TransferClient.submit_transfer).metadata
    backend = make_backend()
    task_id = backend.submit_transfer(
        EP, DST,
        [
            TransferItem("/raw/SC022/p1.bin", "/4ElectrodeRig_Ephys/SC022/p1.bin",
                         external_checksum="0123456789abcdef0123456789abcdef"),
            TransferItem("/raw/SC022/dir", "/4ElectrodeRig_Ephys/SC022/dir", recursive=True),
        ],
        submission_id="my-stored-submission-id",
        label="SC022 ephys",
        sync_level="checksum",
    )
    assert task_id == meta["task_id"]
    request = get_last_request()
    assert request is not None and request.url.endswith("/v0.10/transfer")
    body = json.loads(request.body)
    assert body["submission_id"] == "my-stored-submission-id"
    assert body["verify_checksum"] is True
    assert body["sync_level"] == 3
    assert body["source_endpoint"] == EP and body["destination_endpoint"] == DST
    assert body["label"] == "SC022 ephys"
    first, second = body["DATA"]
    assert first["external_checksum"] == "0123456789abcdef0123456789abcdef"
    assert first["checksum_algorithm"] == "MD5"
    assert first["source_path"] == "/raw/SC022/p1.bin"
    assert "external_checksum" not in second and second["recursive"] is True
    assert request.headers["Authorization"] == f"Bearer {FAKE_TOKEN}"
    # only the submission itself was sent: the stored id was used, no new one fetched
    assert len(responses.calls) == 1


@responses.activate
def test_consent_required_becomes_auth_error() -> None:
    RegisteredResponse(
        service="transfer",
        path=f"/v0.10/operation/endpoint/{EP}/ls",
        status=403,
        json={
            "code": "ConsentRequired",
            "message": "Missing required data_access consent",
            "request_id": "abc",
            "required_scopes": [f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{EP}/data_access]"],
            "authorization_parameters": {"session_message": "consent needed",
                                         "required_scopes": ["data_access"]},
        },
    ).add()
    with pytest.raises(AuthError) as exc:
        make_backend().ls(EP, "/4ElectrodeRig_Ephys")
    msg = str(exc.value)
    assert HINT in msg
    assert "consent" in msg and "data_access" in msg
    assert FAKE_TOKEN not in msg


@responses.activate
def test_expired_token_401_becomes_auth_error() -> None:
    RegisteredResponse(
        service="transfer", path="/v0.10/task/some-task", status=401,
        json={"code": "AuthenticationFailed", "message": "Token is not active", "request_id": "x"},
    ).add()
    with pytest.raises(AuthError) as exc:
        make_backend().task_status("some-task")
    assert HINT in str(exc.value)
    assert "expired" in str(exc.value)
    assert FAKE_TOKEN not in str(exc.value)


def test_revoked_token_against_fake_service_is_auth_error() -> None:
    fake = FakeTransferService([EP])
    fake.valid_tokens = {"some-other-token"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        with pytest.raises(AuthError) as exc:
            make_backend().ls(EP, "/")
    assert HINT in str(exc.value)


def test_unknown_task_is_not_found() -> None:
    fake = FakeTransferService([EP])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        with pytest.raises(NotFound):
            make_backend().task_status("00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize("evil", ["../../etc", "/etc/passwd", "a/b", ".."])
@responses.activate
def test_unsafe_names_in_remote_listing_are_refused(evil: str) -> None:
    RegisteredResponse(
        service="transfer", path=f"/v0.10/operation/endpoint/{EP}/ls",
        json={"DATA_TYPE": "file_list", "DATA": [
            {"DATA_TYPE": "file", "name": evil, "type": "file", "size": 1,
             "last_modified": "2024-01-01 00:00:00+00:00"}],
            "path": "/", "endpoint": EP, "length": 1, "total": 1},
    ).add()
    with pytest.raises(PathEscapeError):
        make_backend().ls(EP, "/")


def test_remote_paths_with_dotdot_refused_before_any_request() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        backend = make_backend()
        for bad in ("../x", "/a/../../x", "relative/path"):
            with pytest.raises(PathEscapeError):
                backend.ls(EP, bad)
        assert len(rsps.calls) == 0


@responses.activate
def test_wait_rechecks_status_because_task_wait_is_true_for_failed() -> None:
    task_id = "11111111-2222-3333-4444-555555555555"
    failed = {"DATA_TYPE": "task", "task_id": task_id, "status": "FAILED", "label": "x",
              "files": 1, "files_transferred": 0, "bytes_transferred": 0, "faults": 1,
              "fatal_error": {"code": "PERMISSION_DENIED", "description": "permission denied"},
              "nice_status": None}
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{task_id}", json=failed).add()
    RegisteredResponse(
        service="transfer", path=f"/v0.10/task/{task_id}/event_list",
        json={"DATA_TYPE": "event_list", "DATA": [
            {"DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True,
             "description": "permission denied", "details": "/4ElectrodeRig_Ephys/x.bin: EACCES"},
            {"DATA_TYPE": "event", "code": "STARTED", "is_error": False, "description": "started"}],
            "total": 2, "offset": 0, "limit": 100},
    ).add()
    client = make_backend().client
    assert client.task_wait(task_id, timeout=1, polling_interval=1) is True  # the trap
    status = GlobusBackend(client).wait(task_id, timeout=1, poll_interval=1)
    assert status.status == "FAILED" and not status.succeeded
    assert status.faults == ("PERMISSION_DENIED: permission denied (/4ElectrodeRig_Ephys/x.bin: EACCES)",)
    assert status.fatal_error == "PERMISSION_DENIED: permission denied"

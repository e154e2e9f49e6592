"""Login, token file permissions, no token leaks, confidential clients, config."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import responses
from globus_sdk.testing import RegisteredResponse
from globus_sdk.transport import RetryConfig

from pipeline.transfer import AuthError, LocalBackend, TransferError
from pipeline.transfer import auth
from pipeline.transfer.config import backend_from_settings, local_endpoint, storage_locations
from pipeline.transfer.globus import GlobusBackend
from pipeline.transfer.testing import FakeTransferService

CLIENT_ID = "3f7a2b1c-0000-4000-8000-123456789abc"
EP = "5b875fda-4185-11e8-bb52-0ac6873fc732"
ACCESS = "FAKE-ACCESS-TOKEN-aaaaaaaaaaaaaaaaaaaa"
REFRESH = "FAKE-REFRESH-TOKEN-bbbbbbbbbbbbbbbbbbbb"
NEW_ACCESS = "FAKE-NEW-ACCESS-TOKEN-cccccccccccccccc"
SECRET = "FAKE-CLIENT-SECRET-dddddddddddddddddddd"
HINT = "mapshell publication-login"
NO_RETRY = RetryConfig(max_retries=0)


def token_response(access: str, refresh: str | None = REFRESH, expires_in: int = 172800) -> RegisteredResponse:
    body = {"access_token": access, "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
            "expires_in": expires_in, "token_type": "Bearer",
            "resource_server": "transfer.api.globus.org", "state": "_default", "other_tokens": []}
    if refresh:
        body["refresh_token"] = refresh
    return RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", json=body)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@responses.activate
def test_login_native_writes_private_token_file(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    token_response(ACCESS).add()
    printed: list[str] = []
    token_file = tmp_path / "cfg" / "globus-tokens.json"
    old_umask = os.umask(0)  # even a wide-open umask must not make the file readable
    try:
        path = auth.login_native(CLIENT_ID, token_file, input_fn=lambda prompt: " the-code ",
                                 print_fn=printed.append)
    finally:
        os.umask(old_umask)
    assert path == token_file
    assert mode(token_file) == 0o600
    assert mode(token_file.parent) == 0o700
    stored = json.loads(token_file.read_text())
    assert stored["client_id"] == CLIENT_ID
    assert stored["transfer.api.globus.org"]["refresh_token"] == REFRESH
    assert f"client_id={CLIENT_ID}" in printed[0] and "access_type=offline" in printed[0]
    form = parse_qs(responses.calls[-1].request.body)
    assert form["code"] == ["the-code"] and form["grant_type"] == ["authorization_code"]
    assert ACCESS not in caplog.text and REFRESH not in caplog.text
    assert not [p for p in token_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_world_readable_token_file_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens.json"
    auth.save_tokens(token_file, CLIENT_ID, {"access_token": ACCESS, "refresh_token": REFRESH,
                                             "expires_at_seconds": time.time() + 3600})
    os.chmod(token_file, 0o644)
    with pytest.raises(AuthError) as exc:
        auth.transfer_client_from_tokens(CLIENT_ID, token_file)
    msg = str(exc.value)
    assert "chmod 600" in msg and str(token_file) in msg and "0644" in msg
    assert ACCESS not in msg and REFRESH not in msg


def test_missing_token_file_tells_user_to_login(tmp_path: Path) -> None:
    with pytest.raises(AuthError) as exc:
        auth.transfer_client_from_tokens(CLIENT_ID, tmp_path / "absent.json")
    assert HINT in str(exc.value)


def test_expired_access_token_without_refresh_token(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens.json"
    auth.save_tokens(token_file, CLIENT_ID, {"access_token": ACCESS, "expires_at_seconds": time.time() - 10})
    with pytest.raises(AuthError) as exc:
        auth.transfer_client_from_tokens(CLIENT_ID, token_file)
    assert "expired" in str(exc.value) and HINT in str(exc.value) and ACCESS not in str(exc.value)


def test_refresh_saves_new_token_and_revoked_refresh_is_auth_error(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "tokens.json"
    auth.save_tokens(token_file, CLIENT_ID, {"access_token": ACCESS, "refresh_token": REFRESH,
                                             "expires_at_seconds": time.time() - 10})
    fake = FakeTransferService([EP])
    fake.valid_tokens = {NEW_ACCESS}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        token_response(NEW_ACCESS, refresh=None).add(requests_mock=rsps)
        backend = GlobusBackend(auth.transfer_client_from_tokens(CLIENT_ID, token_file, retry_config=NO_RETRY))
        assert backend.ls(EP, "/") == []
        refresh_call = [c for c in rsps.calls if "oauth2/token" in c.request.url][0]
        assert parse_qs(refresh_call.request.body)["grant_type"] == ["refresh_token"]
    stored = auth.load_tokens(token_file, CLIENT_ID)
    assert stored["access_token"] == NEW_ACCESS and stored["refresh_token"] == REFRESH
    assert mode(token_file) == 0o600

    # now the refresh token is revoked and the access token expired again
    auth.save_tokens(token_file, CLIENT_ID, {**stored, "expires_at_seconds": time.time() - 10})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", status=400,
                           json={"error": "invalid_grant"}).add(requests_mock=rsps)
        backend = GlobusBackend(auth.transfer_client_from_tokens(CLIENT_ID, token_file, retry_config=NO_RETRY))
        with pytest.raises(AuthError) as exc:
            backend.ls(EP, "/")
    msg = str(exc.value)
    assert HINT in msg
    for secret in (ACCESS, REFRESH, NEW_ACCESS):
        assert secret not in msg
        assert secret not in caplog.text


def test_confidential_client_from_environment(monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MAP_GLOBUS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("MAP_GLOBUS_CLIENT_SECRET", SECRET)
    fake = FakeTransferService([EP])
    fake.valid_tokens = {ACCESS}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        token_response(ACCESS, refresh=None).add(requests_mock=rsps)
        backend = backend_from_settings({"globus.backend": "globus"})
        assert isinstance(backend, GlobusBackend)
        backend.client.retry_config = NO_RETRY
        fake.put_file(EP, "/x.bin", b"1")
        assert [e.name for e in backend.ls(EP, "/")] == ["x.bin"]
        token_call = [c for c in rsps.calls if "oauth2/token" in c.request.url][0]
        basic = token_call.request.headers["Authorization"].split()[1]
        assert base64.b64decode(basic).decode() == f"{CLIENT_ID}:{SECRET}"
        assert parse_qs(token_call.request.body)["grant_type"] == ["client_credentials"]
        ls_call = [c for c in rsps.calls if "/ls" in c.request.url][0]
        assert ls_call.request.headers["Authorization"] == f"Bearer {ACCESS}"
    assert SECRET not in caplog.text and ACCESS not in caplog.text


def test_client_secret_file_must_be_private(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MAP_GLOBUS_CLIENT_ID", raising=False)
    monkeypatch.delenv("MAP_GLOBUS_CLIENT_SECRET", raising=False)
    secret_file = tmp_path / "globus-secret.json"
    secret_file.write_text(json.dumps({"client_id": CLIENT_ID, "client_secret": SECRET}))
    os.chmod(secret_file, 0o644)
    with pytest.raises(AuthError) as exc:
        backend_from_settings({"globus.backend": "globus", "globus.client_secret_file": str(secret_file)})
    assert "chmod 600" in str(exc.value) and SECRET not in str(exc.value)
    os.chmod(secret_file, 0o600)
    assert auth.confidential_credentials(secret_file=secret_file, environ={}) == (CLIENT_ID, SECRET)


def test_backend_from_settings_local_and_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MAP_GLOBUS_CLIENT_ID", raising=False)
    monkeypatch.delenv("MAP_GLOBUS_CLIENT_SECRET", raising=False)
    (tmp_path / "a").mkdir()
    backend = backend_from_settings({
        "globus.backend": "local",
        "globus.local_collections": {"ep-a": str(tmp_path / "a")},
        "globus.local_state_dir": str(tmp_path / "state"),
    })
    assert isinstance(backend, LocalBackend)
    assert backend.collections == {"ep-a": (tmp_path / "a").resolve()}
    assert (tmp_path / "state" / "tasks").is_dir()

    cases = [
        ({"globus.backend": "local"}, "globus.local_collections"),
        ({"globus.backend": "local", "globus.local_collections": {"x": str(tmp_path / "nope")}},
         "globus.local_collections"),
        ({"globus.backend": "ftp"}, "globus.backend"),
        ({"globus.backend": "globus"}, "globus.client_id"),
        ({"globus.storage_locations": {"raw-ephys": {"endpoint": EP, "root": "/../x"}}},
         "globus.storage_locations"),
        ({"globus.storage_locations": "nope"}, "globus.storage_locations"),
    ]
    for settings, key in cases:
        with pytest.raises(TransferError) as exc:
            if "globus.storage_locations" in settings:
                storage_locations(settings)
            else:
                backend_from_settings(settings)
        assert key in str(exc.value), (settings, str(exc.value))

    with pytest.raises(AuthError) as exc:
        backend_from_settings({"globus.client_id": CLIENT_ID, "globus.token_file": str(tmp_path / "t.json")})
    assert HINT in str(exc.value)

    locs = storage_locations({"globus.storage_locations": {
        "raw-ephys": {"endpoint": EP, "root": "/4ElectrodeRig_Ephys"},
        "raw-video": {"endpoint": EP, "root": "/"}}})
    assert locs["raw-ephys"].remote("SC022", "20200101") == "/4ElectrodeRig_Ephys/SC022/20200101"
    assert locs["raw-video"].root == "/"
    le = local_endpoint({"globus.local_endpoint": "C40E", "globus.local_endpoint_subdir": "map/raw",
                         "globus.local_endpoint_local_path": str(tmp_path)})
    assert le.remote_path("SC022/x.bin") == "/map/raw/SC022/x.bin"
    assert le.local_file("SC022/x.bin") == tmp_path / "SC022" / "x.bin"

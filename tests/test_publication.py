"""Publication: publish / discover / retrieve on both transfer backends, against the manifest.

The 'globus' backend is the real globus-sdk TransferClient talking to the offline fake of the
Transfer API (pipeline.transfer.testing) through ``responses``; its local endpoint is backed by
the real directory (DiskTree below), the archive endpoint lives in memory. The 'local' backend
is the real LocalBackend with detached workers, configured through the custom settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import MutableMapping
from pathlib import Path

import globus_sdk
import pytest
import responses
from globus_sdk.transport import RetryConfig

from tests.conftest import RUN_DIR, use_share_paths, wipe_pipeline_data

LEP = "c40e971d-0075-4a82-b12f-8f9717762e7b"     # the lab's local endpoint
ARCH = "5b875fda-4185-11e8-bb52-0ac6873fc732"    # petrel
FAKE_TOKEN = "FAKE-PUBLICATION-TOKEN-0123456789abcdef"
HINT = "mapshell publication-login"
EPHYS_ROOT, VIDEO_ROOT = "/4ElectrodeRig_Ephys", "/video"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_path(path: Path) -> str:
    return md5(path.read_bytes())


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lab(modules):
    """A tiny share of this module's own (files get deleted here), scanned and ingested."""
    from ingest import behavior, share
    from ingest.runner import run_ingest
    from ingest.simulator import simulate_share
    from pipeline.subject_loader import load_subject_file

    base = Path(tempfile.mkdtemp(prefix="pub-", dir=RUN_DIR))
    root = base / "share"
    manifest = simulate_share(root, subjects=2, sessions=2, scale="tiny", seed=7)
    wipe_pipeline_data(modules)
    clear_publication(modules)
    use_share_paths(manifest)
    load_subject_file(root / "subjects.yaml")
    share.scan(["behavior", "ephys", "video"])
    assert run_ingest(behavior.BehaviorIngest, progress=False).failed == 0
    yield {"base": base, "root": root, "manifest": manifest, "modules": modules}
    clear_publication(modules)
    wipe_pipeline_data(modules)


def clear_publication(modules) -> None:
    pub = modules["publication"]
    for table in (pub.ArchivedRawEphys, pub.ArchivedTrackingVideo):
        table().jobs.delete_quick()
    for table in (pub.ArchivedRawEphys, pub.ArchivedTrackingVideo, pub.ArchivedSession,
                  pub.DataSet.PhysicalFile, pub.DataSet, pub.TransferTask):
        table().delete_quick()
    pub.use_backend(None)


def settings_for(lab, tmp: Path, **extra) -> dict:
    """Custom settings: local endpoint = the share (as <collection>/share), archive in tmp."""
    return {
        "globus.backend": "local",
        "globus.storage_locations": {"raw-ephys": {"endpoint": ARCH, "root": EPHYS_ROOT},
                                     "raw-video": {"endpoint": ARCH, "root": VIDEO_ROOT}},
        "globus.local_endpoint": LEP,
        "globus.local_endpoint_subdir": "share",
        "globus.local_endpoint_local_path": str(lab["root"]),
        "globus.local_collections": {LEP: str(lab["base"]), ARCH: str(tmp / "archive")},
        "globus.local_state_dir": str(tmp / "tasks"),
        **extra,
    }


def apply_settings(custom: dict) -> None:
    from pipeline import config

    config.set_active(config.active().with_custom(custom, "test"))


class DiskTree(MutableMapping):
    """A FakeTransferService endpoint tree backed by a real directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, path: str) -> Path:
        return self.root.joinpath(*[p for p in path.split("/") if p])

    def __getitem__(self, path: str) -> dict:
        p = self._p(path)
        if p.is_dir():
            return {"type": "dir", "mtime": p.stat().st_mtime}
        if p.is_file():
            return {"type": "file", "data": p.read_bytes(), "mtime": p.stat().st_mtime}
        raise KeyError(path)

    def __setitem__(self, path: str, node: dict) -> None:
        p = self._p(path)
        if node["type"] == "dir":
            p.mkdir(exist_ok=True)
        else:
            p.write_bytes(node["data"])
            os.utime(p, (node["mtime"], node["mtime"]))

    def __delitem__(self, path: str) -> None:
        p = self._p(path)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()

    def __iter__(self):
        yield "/"
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                yield "/" + (Path(dirpath) / name).relative_to(self.root).as_posix()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Env:
    """One backend under test: how to read and spoil the archive."""

    def __init__(self, kind: str, tmp: Path, lab: dict) -> None:
        self.kind, self.tmp, self.lab = kind, tmp, lab
        self.fake = None

    def archive_bytes(self, remote: str) -> bytes | None:
        if self.kind == "globus":
            return self.fake.read_file(ARCH, remote)
        p = self.tmp / "archive" / remote.lstrip("/")
        return p.read_bytes() if p.is_file() else None

    def corrupt(self, remote: str) -> None:
        data = bytearray(self.archive_bytes(remote))
        data[len(data) // 2] ^= 0xFF
        if self.kind == "globus":
            self.fake.fs[ARCH][remote]["data"] = bytes(data)
        else:
            (self.tmp / "archive" / remote.lstrip("/")).write_bytes(bytes(data))


def globus_backend():
    from pipeline.transfer.globus import GlobusBackend

    client = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(FAKE_TOKEN),
                                       retry_config=RetryConfig(max_retries=0))
    return GlobusBackend(client)


@pytest.fixture(params=["local", "globus"])
def env(request, lab, tmp_path):
    from pipeline import publication as pub
    from pipeline.transfer.testing import FakeTransferService

    clear_publication(lab["modules"])
    (tmp_path / "archive").mkdir()
    apply_settings(settings_for(lab, tmp_path))
    e = Env(request.param, tmp_path, lab)
    if request.param == "local":
        yield e
    else:
        e.fake = FakeTransferService([LEP, ARCH])
        e.fake.fs[LEP] = DiskTree(lab["base"])
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            e.rsps = rsps
            e.register = lambda: e.fake.register(rsps)
            pub.use_backend(globus_backend())
            yield e
    clear_publication(lab["modules"])
    restore_share(lab)


def restore_share(lab) -> None:
    """Put back any share file a test deleted or changed (from a pristine copy)."""
    pristine = RUN_DIR / "pub-pristine"
    if not pristine.exists():
        from ingest.simulator import simulate_share

        simulate_share(pristine, subjects=2, sessions=2, scale="tiny", seed=7)
    for rel, info in lab["manifest"]["files"].items():
        p = lab["root"] / rel
        if not p.exists() or p.stat().st_size != info["size"] or (rel.startswith(("ephys", "video")) and md5_path(p) != info["md5"]):
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(pristine / rel, p)
    from ingest import share

    share.scan(["ephys", "video"])


def raw_manifest_files(manifest, kind: str) -> dict[str, dict]:
    """Manifest files of the raw kind that publication archives (by the FileType globs)."""
    import fnmatch

    globs = {"ephys": ["*.ap.bin", "*.ap.meta", "*.lf.bin", "*.lf.meta", "*.XA_*.txt", "*.nidq.bin", "*.nidq.meta", "*_bitcode.mat"],
             "video": ["*_*_*-*.avi"]}[kind]
    return {rel: info for rel, info in manifest["files"].items()
            if rel.startswith(kind + "/") and any(fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], g) for g in globs)}


def registered_sessions(manifest):
    return [s for s in manifest["sessions"] if s["registered"]]


# --------------------------------------------------------------------------- layout (no transfer)
def test_sessions_map_to_raw_folders_with_same_day_suffix(lab):
    from pipeline import publication as pub

    manifest = lab["manifest"]
    want_ephys = {(s["subject_id"], s["session_number"]): s["ephys"]["dir"] for s in registered_sessions(manifest) if s["ephys"]}
    plan = {(p["subject_id"], p["session"], p["dataset_type"]): p for p in pub.publish_plan()}
    got_ephys = {(k[0], k[1]): "ephys/" + p["dataset_name"] for k, p in plan.items() if k[2] == pub.EPHYS}
    assert got_ephys == want_ephys
    assert any(name.endswith("_1_g0") for name in got_ephys.values())  # second session of a day
    assert {(s["subject_id"], s["session_number"]) for s in registered_sessions(manifest) if s["videos"]} == \
        {(k[0], k[1]) for k in plan if k[2] == pub.VIDEO}
    raw = raw_manifest_files(manifest, "ephys")
    for (subject, session), folder in got_ephys.items():
        p = plan[(subject, session, pub.EPHYS)]
        expected = {rel for rel in raw if rel.startswith(folder + "/")}
        assert p["files"] == len(expected) > 0
        assert p["bytes"] == sum(raw[rel]["size"] for rel in expected)
    keys = pub.ArchivedRawEphys().key_source.to_dicts()
    assert sorted((d["subject_id"], d["session"]) for d in keys) == sorted(want_ephys)


def test_listing_names_that_escape_the_root_are_refused():
    from pipeline import publication as pub
    from pipeline.transfer import Entry, PathEscapeError

    class Listing:
        def ls(self, endpoint, path):
            return [Entry("ok.bin", "file", 3), Entry("..", "dir", 0)]

    with pytest.raises(PathEscapeError):
        list(pub.list_tree(Listing(), ARCH, "/4ElectrodeRig_Ephys/dl30"))

    class Slash(Listing):
        def ls(self, endpoint, path):
            return [Entry("../../etc", "file", 3)]

    with pytest.raises(PathEscapeError):
        list(pub.list_tree(Slash(), ARCH, "/x"))


# --------------------------------------------------------------------------- both backends
def test_publish_then_retrieve_bytes_identical(env, caplog):
    from pipeline import publication as pub

    caplog.set_level(logging.DEBUG)
    if env.fake:
        env.register()
    manifest, root = env.lab["manifest"], env.lab["root"]
    before = {rel: (root / rel).stat().st_mtime_ns for rel in manifest["files"]}
    summaries = pub.publish()
    assert [s.errors for s in summaries] == [[], []]
    ephys_sessions = [s for s in registered_sessions(manifest) if s["ephys"]]
    video_sessions = [s for s in registered_sessions(manifest) if s["videos"]]
    assert [s.inserted for s in summaries] == [len(ephys_sessions), len(video_sessions)]
    # exactly one data set per session and kind, each file with the manifest's size and MD5
    counts = Counter((r["subject_id"], r["session"]) for r in pub.ArchivedRawEphys().to_dicts())
    assert set(counts.values()) == {1} and len(counts) == len(ephys_sessions)
    for kind, root_path in (("ephys", EPHYS_ROOT), ("video", VIDEO_ROOT)):
        for rel, info in raw_manifest_files(manifest, kind).items():
            name, sub = dataset_of(rel)
            row = (pub.DataSet.PhysicalFile & {"dataset_name": name, "file_subpath": sub}).to_dicts()
            assert len(row) == 1, rel
            assert (row[0]["file_md5"], row[0]["file_size"]) == (info["md5"], info["size"])
            assert md5(env.archive_bytes(f"{root_path}/{rel.split('/', 1)[1]}")) == info["md5"]
    n_raw = len(raw_manifest_files(manifest, "ephys")) + len(raw_manifest_files(manifest, "video"))
    assert len(pub.DataSet.PhysicalFile()) == n_raw
    tasks = pub.TransferTask().to_dicts()
    assert len(tasks) == len(ephys_sessions) + len(video_sessions)
    assert {t["status"] for t in tasks} == {"SUCCEEDED"} and all(t["task_id"] for t in tasks)
    # sources untouched
    for rel, info in manifest["files"].items():
        if rel.startswith(("ephys/", "video/")):
            assert md5_path(root / rel) == info["md5"], rel
        assert (root / rel).stat().st_mtime_ns == before[rel], rel
    # nothing left to publish; a rerun does nothing
    assert pub.publish_plan() == []
    assert [s.inserted for s in pub.publish()] == [0, 0]

    # remove one subject's local ephys, retrieve it by restriction, bytes identical
    s = ephys_sessions[0]
    folder = root / s["ephys"]["dir"]
    expected = {rel: info for rel, info in raw_manifest_files(manifest, "ephys").items()
                if rel.startswith(s["ephys"]["dir"] + "/")}
    shutil.rmtree(folder)
    reports = (pub.ArchivedRawEphys & {"subject_id": s["subject_id"], "session": s["session_number"]}).retrieve()
    assert len(reports) == 1 and len(reports[0].fetched) == len(expected) and reports[0].skipped == []
    for rel, info in expected.items():
        assert md5_path(root / rel) == info["md5"]
    # again: every file identical, skipped; nothing transferred
    n_tasks = len(pub.TransferTask())
    again = (pub.ArchivedRawEphys & {"subject_id": s["subject_id"], "session": s["session_number"]}).retrieve()
    assert again[0].fetched == [] and len(again[0].skipped) == len(expected)
    assert len(pub.TransferTask()) == n_tasks
    # a different local file is left alone unless asked
    victim = root / sorted(expected)[0]
    victim.write_bytes(b"local edits")
    with pytest.raises(pub.RetrieveError) as exc:
        (pub.ArchivedRawEphys & {"subject_id": s["subject_id"], "session": s["session_number"]}).retrieve()
    assert str(victim) in str(exc.value) and "overwrite" in str(exc.value)
    assert victim.read_bytes() == b"local edits"
    fixed = (pub.ArchivedRawEphys & {"subject_id": s["subject_id"], "session": s["session_number"]}).retrieve(overwrite=True)
    assert fixed[0].fetched == [str(victim)]
    assert md5_path(victim) == expected[sorted(expected)[0]]["md5"]
    assert FAKE_TOKEN not in caplog.text


def dataset_of(rel: str) -> tuple[str, str]:
    """'ephys/dl30/catgt_x_g0/a/b' -> ('dl30/catgt_x_g0', 'a/b'); video -> ('dl30/20180403', 'video/f')."""
    kind, h2o, folder, sub = rel.split("/", 3)
    return f"{h2o}/{folder}", sub


def test_failed_task_records_nothing_and_shows_its_error(env, monkeypatch, caplog):
    from pipeline import publication as pub

    caplog.set_level(logging.DEBUG)
    if env.fake:
        env.register()
    real = pub.checksum_files
    monkeypatch.setattr(pub, "checksum_files", lambda paths: ["0" * 32] + real(paths)[1:])
    summaries = pub.publish([pub.EPHYS])
    n = len([s for s in registered_sessions(env.lab["manifest"]) if s["ephys"]])
    assert summaries[0].inserted == 0 and len(summaries[0].errors) == n
    assert all("CHECKSUM_MISMATCH" in e and "ended FAILED" in e for e in summaries[0].errors)
    for table in (pub.ArchivedRawEphys, pub.ArchivedSession, pub.DataSet, pub.DataSet.PhysicalFile):
        assert len(table()) == 0, table
    tasks = pub.TransferTask().to_dicts()
    assert len(tasks) == n and {t["status"] for t in tasks} == {"FAILED"}
    assert all("CHECKSUM_MISMATCH" in t["faults"] and t["completed"] for t in tasks)
    assert any("failed:" in line and "CHECKSUM_MISMATCH" in line for line in pub.status_lines())
    # the next publish tries again (new submission) and succeeds
    monkeypatch.setattr(pub, "checksum_files", real)
    assert pub.publish([pub.EPHYS])[0].inserted == n
    assert len(pub.TransferTask()) == 2 * n
    assert FAKE_TOKEN not in caplog.text


def test_corrupted_archive_copy_detected_on_retrieve(env):
    from pipeline import publication as pub
    from pipeline.transfer import TaskFailed

    if env.fake:
        env.register()
    manifest, root = env.lab["manifest"], env.lab["root"]
    s = [s for s in registered_sessions(manifest) if s["ephys"]][-1]
    key = {"subject_id": s["subject_id"], "session": s["session_number"]}
    assert pub.ArchivedRawEphys.populate(key)["success_count"] == 1
    bin_rel = next(rel for rel in raw_manifest_files(manifest, "ephys") if rel.startswith(s["ephys"]["dir"] + "/") and rel.endswith(".ap.bin"))
    env.corrupt(f"{EPHYS_ROOT}/{bin_rel.split('/', 1)[1]}")
    (root / bin_rel).unlink()
    with pytest.raises(TaskFailed) as exc:
        (pub.ArchivedRawEphys & key).retrieve()
    assert "CHECKSUM_MISMATCH" in str(exc.value) and manifest["files"][bin_rel]["md5"] in str(exc.value)
    assert not (root / bin_rel).exists()
    assert (pub.TransferTask & {"direction": "retrieve"}).to_arrays("status").tolist() == ["FAILED"]


def test_discover_registers_archive_without_transfer_then_retrieve_checks(env):
    from ingest import share
    from pipeline import publication as pub

    if env.fake:
        env.register()
    manifest, root = env.lab["manifest"], env.lab["root"]
    assert pub.publish([pub.EPHYS, pub.VIDEO])[0].errors == []
    n_sets = len(pub.DataSet())
    # the database forgets, the local files go: only the archive is left
    for table in (pub.ArchivedRawEphys, pub.ArchivedTrackingVideo, pub.ArchivedSession, pub.DataSet.PhysicalFile,
                  pub.DataSet, pub.TransferTask):
        table().delete_quick()
    shutil.rmtree(root / "ephys" / "dl30")
    share.scan(["ephys"])
    if env.fake:
        env.fake.put_file(ARCH, f"{EPHYS_ROOT}/zz01/catgt_zz01_20200101_g0/zz01_20200101_g0_tcat.nidq.XA_0_0.txt", b"1\n")
    else:
        stray = env.tmp / "archive" / EPHYS_ROOT.lstrip("/") / "zz01" / "catgt_zz01_20200101_g0"
        stray.mkdir(parents=True)
        (stray / "zz01_20200101_g0_tcat.nidq.XA_0_0.txt").write_text("1\n")
    reports = pub.discover()
    assert len(pub.TransferTask()) == 0  # nothing transferred
    assert len(pub.DataSet()) == n_sets
    assert reports[0].unmatched == ["zz01/catgt_zz01_20200101_g0"]
    raw = raw_manifest_files(manifest, "ephys")
    rows = (pub.DataSet.PhysicalFile & {"globus_alias": "raw-ephys"}).to_dicts()
    assert {(f"ephys/{r['dataset_name']}/{r['file_subpath']}", r["file_size"]) for r in rows} == \
        {(rel, info["size"]) for rel, info in raw.items()}
    assert all(r["file_md5"] is None for r in rows)
    assert pub.discover()[0].already == len(pub.ArchivedRawEphys())  # idempotent
    dl30 = manifest["subjects"][0]["subject_id"] if manifest["subjects"][0]["h2o"] == "dl30" else manifest["subjects"][1]["subject_id"]
    reports = (pub.ArchivedRawEphys & {"subject_id": dl30}).retrieve()
    fetched = [Path(p) for r in reports for p in r.fetched]
    want = {rel for rel in raw if rel.startswith("ephys/dl30/")}
    assert {p.relative_to(root).as_posix() for p in fetched} == want
    for rel in want:
        assert md5_path(root / rel) == raw[rel]["md5"]
    got = {f"ephys/{r['dataset_name']}/{r['file_subpath']}": r["file_md5"]
           for r in (pub.DataSet.PhysicalFile & {"globus_alias": "raw-ephys"}).to_dicts()}
    assert all(got[rel] == raw[rel]["md5"] for rel in want)  # learned on retrieve


# --------------------------------------------------------------------------- Globus errors
@pytest.fixture
def globus_env(lab, tmp_path):
    from pipeline import publication as pub
    from pipeline.transfer.testing import FakeTransferService

    clear_publication(lab["modules"])
    apply_settings(settings_for(lab, tmp_path))
    fake = FakeTransferService([LEP, ARCH])
    fake.fs[LEP] = DiskTree(lab["base"])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        pub.use_backend(globus_backend())
        yield fake, rsps
    clear_publication(lab["modules"])


def test_consent_required_on_submit_says_what_to_run(globus_env, caplog, capsys):
    from pipeline import publication as pub
    from pipeline import publication_commands  # noqa: F401  (registers the commands)
    from pipeline.shell import main

    caplog.set_level(logging.DEBUG)
    fake, rsps = globus_env
    fake._transfer = lambda **_: (403, {
        "code": "ConsentRequired", "message": "Missing required data_access consent", "request_id": "x",
        "required_scopes": [f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{ARCH}/data_access]"],
        "authorization_parameters": {"session_message": "consent", "required_scopes": ["data_access"]}})
    fake.register(rsps)
    assert main(["publish", "--no-scan", "--kind", "ephys"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert HINT in out.out and "consent" in out.out and "data_access" in out.out
    for table in (pub.ArchivedRawEphys, pub.DataSet, pub.ArchivedSession):
        assert len(table()) == 0
    # the saved submission stays SUBMITTING: a rerun after login reuses it
    assert set(pub.TransferTask().to_arrays("status").tolist()) == {"SUBMITTING"}
    assert FAKE_TOKEN not in caplog.text + out.out + out.err


def test_expired_token_says_what_to_run(globus_env, caplog, capsys):
    from pipeline import publication as pub
    from pipeline import publication_commands  # noqa: F401
    from pipeline.shell import main

    caplog.set_level(logging.DEBUG)
    fake, rsps = globus_env
    fake.valid_tokens = {"some-other-token"}
    fake.register(rsps)
    for argv in (["publish", "--no-scan"], ["discover"], ["publication-status"]):
        code = main(argv)
        out = capsys.readouterr()
        if argv[0] == "publication-status":
            assert code == 0 and "pending" in out.out  # status needs no Globus
            continue
        assert code == 2, argv
        assert out.err.startswith(f"mapshell {argv[0]}: error:") and HINT in out.err and "expired" in out.err
        assert "Traceback" not in out.err and FAKE_TOKEN not in out.err + out.out
    assert len(pub.TransferTask()) == 0 and len(pub.DataSet()) == 0
    assert FAKE_TOKEN not in caplog.text


def test_publication_login_token_file_private_and_never_printed(lab, tmp_path, monkeypatch, capsys, caplog):
    from globus_sdk.testing import RegisteredResponse

    from pipeline import config
    from pipeline import publication_commands  # noqa: F401
    from pipeline.shell import main

    caplog.set_level(logging.DEBUG)
    access, refresh = "FAKE-LOGIN-ACCESS-aaaaaaaaaaaa", "FAKE-LOGIN-REFRESH-bbbbbbbbbbbb"
    token_file = tmp_path / "cfg" / "tokens.json"
    apply_settings({"globus.client_id": "3f7a2b1c-0000-4000-8000-123456789abc", "globus.token_file": str(token_file)})
    monkeypatch.setattr("builtins.input", lambda prompt="": "the-code")
    old = os.umask(0)
    try:
        with responses.RequestsMock() as rsps:
            RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", json={
                "access_token": access, "refresh_token": refresh, "expires_in": 172800, "token_type": "Bearer",
                "scope": "urn:globus:auth:scope:transfer.api.globus.org:all", "state": "_default",
                "resource_server": "transfer.api.globus.org", "other_tokens": []}).add(requests_mock=rsps)
            assert main(["publication-login"]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text())["transfer.api.globus.org"]["refresh_token"] == refresh
    assert str(token_file) in out.out
    cfg_path = config.active().path
    for text in (out.out, out.err, caplog.text, cfg_path.read_text() if cfg_path else ""):
        assert access not in text and refresh not in text


# --------------------------------------------------------------------------- crash and resume (local)
def _wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_publisher_resumes_with_exactly_one_dataset_per_session(lab, tmp_path):
    from pipeline import publication as pub
    from pipeline.transfer import LocalBackend

    clear_publication(lab["modules"])
    (tmp_path / "archive").mkdir()
    custom = settings_for(lab, tmp_path)
    apply_settings(custom)
    conf = tmp_path / "dj_local_conf.json"
    conf.write_text(json.dumps({"safemode": False, "custom": {**custom, "globus.local_max_bytes_per_second": 4_000_000}}))
    env = {**os.environ, "MAP_CONFIG": str(conf), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = "from pipeline import publication as p; p.publish([p.EPHYS])"
    backend = LocalBackend(custom["globus.local_collections"], custom["globus.local_state_dir"])

    def active_task(exclude=()):
        for t in (pub.TransferTask & "status = 'ACTIVE'").to_dicts():
            if t["task_id"] and t["dataset_name"] not in exclude:
                rec = backend.task_record(t["task_id"])
                tmp = rec.get("in_progress_tmp") or ""
                if rec["status"] == "ACTIVE" and rec.get("worker_pid") and ".ap.bin." in tmp and os.path.exists(tmp) \
                        and os.path.getsize(tmp) < 4_000_000:  # well inside an 11 MB file
                    return t, rec
        return None

    # 1: kill the publisher mid-transfer; its task's worker goes on
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    first, _ = _wait_for(active_task, what="first task mid-transfer")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # 2: rerun (throttled): it resumes the first task's submission; kill publisher and worker mid-transfer
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    second, rec = _wait_for(lambda: active_task(exclude=(first["dataset_name"],)), what="second task mid-transfer")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(rec["worker_pid"], signal.SIGKILL)
    _wait_for(lambda: backend.task_status(second["task_id"]).done, what="killed task to end")
    died = backend.task_status(second["task_id"]).nice_status == "WORKER_DIED"
    # 3: rerun here, unthrottled
    summary = pub.publish([pub.EPHYS])[0]
    assert summary.errors == []
    sessions = [s for s in registered_sessions(lab["manifest"]) if s["ephys"]]
    counts = Counter((r["subject_id"], r["session"]) for r in pub.ArchivedRawEphys().to_dicts())
    assert counts == Counter({(s["subject_id"], s["session_number"]): 1 for s in sessions})
    assert len(pub.DataSet()) == len(sessions)
    tasks = pub.TransferTask().to_dicts()
    first_tasks = [t for t in tasks if t["dataset_name"] == first["dataset_name"]]
    assert [t["submission_id"] for t in first_tasks] == [first["submission_id"]]  # reused, not resubmitted
    assert first_tasks[0]["status"] == "SUCCEEDED"
    second_tasks = sorted((t for t in tasks if t["dataset_name"] == second["dataset_name"]), key=lambda t: (t["submitted"], t["status"] != "FAILED"))
    assert died  # the kill landed mid-transfer
    assert [t["status"] for t in second_tasks] == ["FAILED", "SUCCEEDED"]
    assert "WORKER_DIED" in second_tasks[0]["faults"]
    # the backend ran exactly one task per submission
    labels = Counter(backend.task_record(t)["label"] for t in backend.task_ids())
    assert labels[f"MAP publish ephys-raw {first['dataset_name']}"] == 1
    raw = raw_manifest_files(lab["manifest"], "ephys")
    archive = tmp_path / "archive" / EPHYS_ROOT.lstrip("/")
    for rel, info in raw.items():
        assert md5_path(archive / rel.split("/", 1)[1]) == info["md5"]
    assert not [p for p in archive.rglob("*") if p.name.endswith(".part")]

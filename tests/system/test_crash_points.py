"""kill -9 at the crash points issue 24 names, each armed with ``APPLIANCE_FAILPOINT``
(:mod:`appliance.failpoints`): the real process dies by SIGKILL at that line, is started
again without it, and the invariants hold: every instance a sender saw acknowledged is in
the spool and the index, every series ends in a final state once, the outbox delivers the
object (a resend is the same SOP instance with the same bytes), the hub holds each report
once, the model registry holds a model whole or not at all, and the audit chain verifies.

Crash points already proven elsewhere: kill -9 of the listener mid-PDU
(test_kill9_ingest.py) and of the worker mid-series, mid-inference (test_kill9_worker.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from appliance.db import open_database
from appliance.report import ResultUids, build_sr
from appliance.send.outbox import Outbox, OutgoingObject
from appliance.sync import report_queue
from appliance.sync.round import enrol
from scripts.harness import READY_TIMEOUT_S, REPO, ApplianceProcess, free_port, stop_process, tcp_env, wait_until
from tests.helpers.dimse import echo
from tests.helpers.hub import CHEST_PACKAGE, DEMO_KEY, HEAD_PACKAGE, HEAD_VERSION, HubProcess, box_env, box_settings, make_report
from tests.helpers.series import ct_series, header_only, write_mr_series
from tests.helpers.sr import DEVICE_UID, decision

F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity
SIGKILLED = -9  # Popen.returncode of a child that died by SIGKILL


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m appliance.cli ARGS`` to its end."""
    done = subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done


def armed(env: dict[str, str], point: str) -> dict[str, str]:
    return {**env, "APPLIANCE_FAILPOINT": point}


def disarmed(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "APPLIANCE_FAILPOINT"}


def assert_audit_verifies(env: dict[str, str]) -> None:
    done = cli(disarmed(env), "audit", "verify", check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "audit log intact"), done.stdout + done.stderr


def dataset_bytes(path: Path) -> bytes:
    """The dataset part of a DICOM file (what goes on the wire), without preamble and meta."""
    with open(path, "rb") as stream:
        read_preamble(stream, False)
        _read_file_meta_info(stream)
        return stream.read()


def storescu(port: int, files: list[Path]) -> dict[str, str]:
    """dcmtk's storescu of ``files`` over one association: {SOP Instance UID: sha256 of the
    dataset} of each instance whose Success response was read. A listener that dies mid-way
    ends it early (the rest unacknowledged)."""
    uids = {path: pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}
    command = ["storescu", "-v", "-aet", "MODALITY", "-aec", "TRIAGE", "127.0.0.1", str(port), *map(str, files)]
    acknowledged: dict[str, str] = {}
    with subprocess.Popen(command, env=tcp_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as sender:
        fcntl.fcntl(sender.stdout.fileno(), F_SETPIPE_SZ, 4096)
        current = None
        for line in sender.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif "Received Store Response (Success)" in line and current is not None:
                acknowledged[uids[current]] = hashlib.sha256(dataset_bytes(current)).hexdigest()
                current = None
        sender.wait(timeout=READY_TIMEOUT_S)
    return acknowledged


def killed_by_its_failpoint(process: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> None:
    wait_until(lambda: process.poll() is not None, timeout=timeout, what="the armed process to die")
    assert process.returncode == SIGKILLED, f"exited with {process.returncode}, not by SIGKILL"


# --- receive: after the file is in the spool, before the C-STORE answer --------------------
@pytest.mark.parametrize("point", ["after-file-before-index", "after-file-before-response"])
def test_a_listener_killed_between_the_spool_and_the_answer_loses_and_duplicates_nothing(tmp_path, point):
    series_uid, files = write_mr_series(tmp_path / "mr", 5)
    # The aborted association's series wait out the quiet period alone (60 s: the restart
    # and the resend come well inside it); the resend's release completes it at once.
    box = ApplianceProcess(tmp_path / "data", dicom_quiet_period_s="60", failpoint=point)
    box.command = "serve"  # the worker too: the series must reach its final state
    db_path = box.data_dir / "appliance.db"
    box.start()
    try:
        first = storescu(box.port, files)
        killed_by_its_failpoint(box.process)
        assert first == {}  # the first instance killed it before any answer
        with sqlite3.connect(db_path) as db:
            rows = db.execute("SELECT sop_instance_uid, path FROM instances").fetchall()
        spooled = [p for p in (box.data_dir / "spool").rglob("*.dcm") if ".incoming" not in p.parts]
        assert len(spooled) == 1  # renamed into place, unacknowledged
        if point == "after-file-before-index":
            assert rows == []  # no row names it: the resend writes it again
        else:
            assert [Path(path) for _, path in rows] == spooled  # durable and indexed, never answered

        box.env = disarmed(box.env)
        box.start()
        acknowledged = storescu(box.port, files)
        assert len(acknowledged) == len(files)
        state = wait_until(lambda: final_state(db_path, series_uid), timeout=120, what="the series to end")
        assert state == "not-eligible"  # an MR series: no routing rule takes it
        with sqlite3.connect(db_path) as db:
            stored = {uid: (sha, path) for uid, sha, path in
                      db.execute("SELECT sop_instance_uid, sha256, path FROM instances")}
            assert db.execute("SELECT COUNT(*) FROM instance_replacements").fetchone() == (0,)
            assert db.execute("SELECT COUNT(*), generation FROM series").fetchone() == (1, 1)
            assert db.execute("SELECT state FROM jobs").fetchall() == [("done",)]
        assert set(stored) == set(acknowledged)
        for uid, sha in acknowledged.items():
            assert stored[uid][0] == sha and Path(stored[uid][1]).is_file()
        spooled = [p for p in (box.data_dir / "spool").rglob("*.dcm") if ".incoming" not in p.parts]
        assert sorted(spooled) == sorted(Path(path) for _, path in stored.values())  # no orphan file
        assert list((box.data_dir / "spool" / ".incoming").iterdir()) == []
    finally:
        box.stop()
    assert_audit_verifies(box.env)


def final_state(db_path: Path, series_uid: str) -> str | None:
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT state FROM series WHERE series_instance_uid = ?", (series_uid,)).fetchone()
    return row[0] if row and row[0] in ("triaged", "not-eligible", "failed") else None


# --- send: the PACS acknowledged the object, the outbox row is still pending ----------------
class Storescp:
    """dcmtk's storescp as the PACS: every object it receives in a file of its own."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True)
        self.folder, self.port = folder, free_port()
        self.log = folder.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(["storescp", "-aet", "PACS", "+uf", "-od", str(folder), str(self.port)],
                                            env=tcp_env(), stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: echo(self.port, "PACS"), what="storescp to listen")

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


def test_a_worker_killed_after_the_pacs_acknowledged_delivers_the_same_object_again(tmp_path):
    pacs = Storescp(tmp_path / "pacs")
    try:
        data = tmp_path / "data"
        destination = f"PACS@127.0.0.1:{pacs.port}"
        env = {**ApplianceProcess(data).env, "APPLIANCE_DICOM_DESTINATIONS": destination,
               "APPLIANCE_SENDER_POLL_INTERVAL_S": "0.2"}
        data.mkdir()
        sr = build_sr([header_only(ct_series(1)[0])], decision(), ResultUids.from_key("crash"), device_uid=DEVICE_UID)
        results = data / "results"
        results.mkdir()
        path = results / f"{sr.SOPInstanceUID}.dcm"
        sr.save_as(path, enforce_file_format=True)
        db = open_database(data / "appliance.db")
        [item_id] = Outbox(db).enqueue(OutgoingObject.of(path, sr, alert=True), [destination])
        db.conn.close()

        worker = subprocess.Popen([sys.executable, "-m", "appliance.cli", "worker"], env=armed(env, "mid-send"),
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            killed_by_its_failpoint(worker, timeout=120)
        finally:
            worker.kill()
            worker.wait()
        assert len(pacs.received()) == 1  # the PACS has it
        assert outbox_state(data, item_id) == ("pending", 0)  # the box does not know yet

        worker = subprocess.Popen([sys.executable, "-m", "appliance.cli", "worker"], env=env, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: outbox_state(data, item_id)[0] == "sent", timeout=120, what="the outbox row to be sent")
        finally:
            assert stop_process(worker)
        assert outbox_state(data, item_id) == ("sent", 1)
        # Delivered at least once; a second copy is the same SOP instance with the same bytes.
        copies = pacs.received()
        assert 1 <= len(copies) <= 2
        assert {pydicom.dcmread(p).SOPInstanceUID for p in copies} == {sr.SOPInstanceUID}
        assert len({dataset_bytes(p) for p in copies}) == 1
    finally:
        stop_process(pacs.process)
    assert_audit_verifies(env)


def outbox_state(data: Path, item_id: int) -> tuple[str, int]:
    with sqlite3.connect(data / "appliance.db") as db:
        return db.execute("SELECT state, attempts FROM outbox WHERE id = ?", (item_id,)).fetchone()


# --- sync: the hub answered a batch, the queue still says pending ---------------------------
def test_a_sync_killed_after_the_hub_answered_leaves_each_report_at_the_hub_once(tmp_path):
    hub = HubProcess(tmp_path / "hub", None).start()
    try:
        settings = box_settings(tmp_path / "box", sync_batch_size="2")
        enrol(settings, hub.url, hub.token(site="crash"))
        db = open_database(settings.db_path)
        reports = [make_report() for _ in range(5)]
        for report in reports:
            assert report_queue.enqueue_report(db.conn, report)
        db.conn.close()
        sent = sorted(r["report_id"] for r in reports)
        env = box_env(settings)

        sync = subprocess.Popen([sys.executable, "-m", "appliance.cli", "sync"], env=armed(env, "mid-sync"), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            killed_by_its_failpoint(sync, timeout=120)
        finally:
            sync.kill()
            sync.wait()
        held = hub.report_ids()
        assert len(held) == 2  # the first batch reached the hub
        assert report_states(settings.db_path) == {"pending": 5}  # the box never recorded it

        cli(env, "sync")
        ids = hub.report_ids()
        assert len(ids) == len(set(ids)) and sorted(ids) == sent
        assert report_states(settings.db_path) == {"delivered": 5}
    finally:
        hub.stop()
    assert_audit_verifies(env)


def report_states(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM sync_reports GROUP BY state").fetchall())


# --- models: the files are in place, the registry has no row --------------------------------
def install_killed_at(env: dict[str, str], failpoint: str, package: Path) -> None:
    """``appliance models install package``, killed -9 at ``failpoint``."""
    install = subprocess.Popen([sys.executable, "-m", "appliance.cli", "models", "install", str(package)],
                               env=armed(env, failpoint), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        killed_by_its_failpoint(install, timeout=300)
    finally:
        install.kill()
        install.wait()


def test_an_install_killed_before_its_registry_row_leaves_the_model_absent_and_installs_again(tmp_path):
    data = tmp_path / "data"
    env = {**ApplianceProcess(data).env, "APPLIANCE_MODELS_TRUSTED_KEYS": str(DEMO_KEY)}
    data.mkdir()
    cli(env, "models", "install", str(CHEST_PACKAGE), "--activate")
    before = registry_rows(data)
    assert [(model_id, state) for model_id, _, state, _ in before] == [("chest-cr-pneumothorax-demo", "active")]

    install_killed_at(env, "mid-install", HEAD_PACKAGE)
    assert registry_rows(data) == before  # absent, not half installed; the active model unchanged
    listed = cli(env, "models", "list").stdout
    assert "head-ct-ich-demo" not in listed and "chest-cr-pneumothorax-demo" in listed
    assert not list((data / "models").glob(".incoming-*"))
    [orphan] = (data / "models" / "head-ct-ich-demo").iterdir()  # unpacked, no row: removed by the next install

    cli(env, "models", "install", str(CHEST_PACKAGE))  # installed already: changes nothing but the leftovers
    assert not orphan.exists() and registry_rows(data) == before

    cli(env, "models", "install", str(HEAD_PACKAGE))
    after = registry_rows(data)
    assert [row for row in after if row[0] != "head-ct-ich-demo"] == before  # the active model unchanged
    [head] = [row for row in after if row[0] == "head-ct-ich-demo"]
    assert head[2] == "installed"
    assert Path(head[3], "package.tar").read_bytes() == HEAD_PACKAGE.read_bytes()
    with sqlite3.connect(data / "appliance.db") as db:
        installs = [json.loads(p)["model_id"] for (p,) in
                    db.execute("SELECT payload FROM audit_log WHERE kind = 'model-installed'")]
    assert sorted(installs) == ["chest-cr-pneumothorax-demo", "head-ct-ich-demo"]  # each once
    assert_audit_verifies(env)


def test_an_install_killed_while_unpacking_leaves_nothing_the_next_install_does_not_remove(tmp_path):
    """C6, found by trying C5 as an attacker: a kill -9 while the package is unpacked left a
    half-unpacked ``.incoming-*`` folder and the package copy (21 MB for the head-CT
    package) under a random name that no later install would ever replace."""
    data = tmp_path / "data"
    env = {**ApplianceProcess(data).env, "APPLIANCE_MODELS_TRUSTED_KEYS": str(DEMO_KEY)}
    cli(env, "models", "install", str(CHEST_PACKAGE), "--activate")
    before = registry_rows(data)

    install_killed_at(env, "mid-unpack", HEAD_PACKAGE)
    left = sorted(p.name for p in (data / "models").glob(".incoming-*"))
    assert len(left) == 2 and left[1] == left[0] + ".tar"  # the unpacked folder and the package copy
    assert registry_rows(data) == before and not (data / "models" / "head-ct-ich-demo").exists()

    cli(env, "models", "install", str(CHEST_PACKAGE))  # installed already: removes the leftovers only
    assert not list((data / "models").glob(".incoming-*")) and registry_rows(data) == before
    cli(env, "models", "install", str(HEAD_PACKAGE))
    assert [row[:3] for row in registry_rows(data)] == [
        *[row[:3] for row in before], ("head-ct-ich-demo", HEAD_VERSION, "installed")]
    assert_audit_verifies(env)


def registry_rows(data: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(data / "appliance.db") as db:
        return db.execute("SELECT id, version, state, path FROM models ORDER BY id, version").fetchall()


"""Issue 24's load case: a mixed stream arriving over three associations at once into
``appliance serve`` (listener, web, worker) while a shadow model runs on every head CT,
the worklist API is polled, and ``appliance sync`` rounds push queued reports to a real
hub and stage a release in shadow. Every count is exact afterwards: each acknowledged
instance indexed once, each series ended once in its expected state, a shadow result for
every head CT, each report at the hub once; no request failed, no SQLite busy error was
logged, the audit chain verifies."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from appliance.config import load_settings
from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.sync import report_queue
from appliance.sync.round import enrol
from scripts.harness import READY_TIMEOUT_S, REPO, ApplianceProcess, tcp_env, wait_for_port, wait_until
from tests.helpers.hub import HubProcess, make_report
from tests.helpers.packages import rebuilt
from tests.helpers.series import head_ct, write_mr_series
from training.data.cr_synth import CRConfig, generate_cr_dataset

HEAD_SERIES, CHEST_IMAGES, MR_SERIES, REPORTS = 3, 8, 3, 24
FINAL = {"triaged", "not-eligible", "failed"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def storescu(port: int, calling_ae: str, files: list[Path]) -> subprocess.CompletedProcess:
    """dcmtk's storescu, one association per call, proposing JPEG-LS lossless beside the
    uncompressed syntaxes (the radiographs are JPEG-LS)."""
    return subprocess.run(["storescu", "-xt", "-aet", calling_ae, "-aec", "TRIAGE", "127.0.0.1", str(port),
                           *map(str, files)], env=tcp_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture
def hub(tmp_path):
    process = HubProcess(tmp_path / "hub", None).start()
    yield process
    process.stop()


@pytest.mark.timeout(900)  # generating the studies and building the quick packages on a busy 2-core machine
def test_a_mixed_stream_during_sync_rounds_with_a_shadow_model_loses_and_doubles_nothing(
        tmp_path, hub, quick_packages):
    public, private = quick_packages["public_key"], quick_packages["private_key"]
    box = ApplianceProcess(tmp_path / "data", models_trusted_keys=str(public), sync_batch_size="4",
                           sync_retry_initial_s="0.05", sync_retry_max_s="0.2", sync_timeout_s="60")
    box.command = "serve"
    env = {**box.env, "PYTHONWARNINGS": "ignore"}
    box.data_dir.mkdir(parents=True)
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("APPLIANCE_")})

    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [public])
    for name in ("head-ct", "chest-cr"):
        model = registry.install(quick_packages[name], "test")
        registry.activate(model.id, model.version, "test")
    head_shadow = registry.install(rebuilt(quick_packages["head-ct"], private, tmp_path, "1.1.0"), "test")
    registry.shadow(head_shadow.id, head_shadow.version, "test")
    reports = [make_report(day=f"2026-11-{day:02d}") for day in range(1, REPORTS + 1)]
    for report in reports:
        assert report_queue.enqueue_report(db.conn, report)
    db.conn.close()

    enrol(settings, hub.url, hub.token())
    chest_release = rebuilt(quick_packages["chest-cr"], private, tmp_path, "1.1.0")
    hub.admin("publish", str(chest_release), "--ring", "all", "--trusted-key", str(public))
    token = cli(env, "tokens", "create", "--role", "radiologist").stdout.strip().splitlines()[-1]

    heads = [head_ct(tmp_path / f"head{i}", seed=40 + i) for i in range(HEAD_SERIES)]
    generate_cr_dataset(CRConfig(n_patients=CHEST_IMAGES, seed=41), tmp_path / "chest", workers=1)
    chests = sorted((tmp_path / "chest").rglob("*.dcm"))
    mrs = [write_mr_series(tmp_path / f"mr{i}", 12)[1] for i in range(MR_SERIES)]
    assert len(chests) == CHEST_IMAGES

    box.start()
    web = f"http://127.0.0.1:{env['APPLIANCE_WEB_PORT']}"
    wait_for_port(int(env["APPLIANCE_WEB_PORT"]))  # the web server starts after the listener's line
    sending = threading.Event()
    polls: list[int] = []
    rounds: list[subprocess.CompletedProcess] = []

    def poll_worklist() -> None:
        with httpx.Client(base_url=web, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            while sending.is_set():
                polls.append(client.get("/api/studies").status_code)

    def sync_rounds() -> None:
        while sending.is_set() or not rounds:
            rounds.append(cli(env, "sync"))

    sent: dict[str, list[subprocess.CompletedProcess]] = {"CT": [], "CR": [], "MR": []}

    def send(kind: str, batches: list[list[Path]]) -> None:
        """One association per batch; the batches spread over the sync rounds (batch i
        waits for round i // 2 to have ended), so ingest and the rounds overlap."""
        for i, files in enumerate(batches):
            wait_until(lambda i=i: len(rounds) >= i // 2, timeout=600, what=f"sync round {i // 2}")
            sent[kind].append(storescu(box.port, f"{kind}SCANNER", files))

    senders = [threading.Thread(target=send, args=args) for args in
               (("CT", heads), ("CR", [[chest] for chest in chests]), ("MR", mrs))]
    helpers = [threading.Thread(target=poll_worklist), threading.Thread(target=sync_rounds)]
    sending.set()
    try:
        for thread in helpers + senders:
            thread.start()
        for thread in senders:
            thread.join(timeout=600)
        expected = sum(map(len, heads)) + len(chests) + sum(map(len, mrs))
        wait_until(lambda: _series_states(box.data_dir, expected), timeout=600,
                   what=f"every series to end: {[(k, [d.returncode for d in v]) for k, v in sent.items()]}")
    finally:
        sending.clear()
        for thread in helpers:
            thread.join(timeout=600)
        box.stop()
    rounds.append(cli(env, "sync"))  # after the load: whatever is left goes now

    assert all(done.returncode == 0 for kind in sent for done in sent[kind]), [
        done.stdout[-500:] + done.stderr[-500:] for kind in sent for done in sent[kind] if done.returncode]
    with sqlite3.connect(box.data_dir / "appliance.db") as conn:
        instances = conn.execute("SELECT COUNT(*), COUNT(DISTINCT sop_instance_uid) FROM instances").fetchone()
        series = dict(conn.execute("SELECT calling_ae || ' ' || series_instance_uid, state || ' ' || generation "
                                   "FROM series").fetchall())
        inferences = [json.loads(p) for (p,) in conn.execute(
            "SELECT payload FROM audit_log WHERE kind = 'inference' ORDER BY seq")]
    assert instances == (expected, expected)  # every instance once
    by_sender = {ae: sorted(state for key, state in series.items() if key.startswith(ae))
                 for ae in ("CTSCANNER", "CRSCANNER", "MRSCANNER")}
    assert by_sender == {"CTSCANNER": ["triaged 1"] * HEAD_SERIES, "CRSCANNER": ["triaged 1"] * CHEST_IMAGES,
                         "MRSCANNER": ["not-eligible 1"] * MR_SERIES}  # each ended once, none run twice
    head_id = head_shadow.id
    roles = sorted((r["model_id"] == head_id, r["role"]) for r in inferences if "error" not in r)
    assert roles.count((True, "active")) == roles.count((True, "shadow")) == HEAD_SERIES
    assert roles.count((False, "active")) == CHEST_IMAGES and roles.count((False, "shadow")) <= CHEST_IMAGES
    assert not [r for r in inferences if "error" in r]

    assert polls and set(polls) == {200}, sorted(set(polls))
    assert [done.returncode for done in rounds] == [0] * len(rounds), [d.stderr[-800:] for d in rounds if d.returncode]
    assert sorted(hub.report_ids()) == sorted(r["report_id"] for r in reports)  # each once
    listed = cli(env, "models", "list").stdout.splitlines()
    assert [line for line in listed if "chest-cr" in line and "1.1.0" in line and "shadow" in line], listed
    log = box.log.read_text()
    assert "database is locked" not in log and "SQLITE_BUSY" not in log and "Traceback" not in log, log[-3000:]
    verify = cli(env, "audit", "verify")
    assert (verify.returncode, verify.stdout.strip()) == (0, "audit log intact"), verify.stdout + verify.stderr


def _series_states(data: Path, instances: int) -> bool:
    """Every instance indexed and every series in a final state."""
    with sqlite3.connect(data / "appliance.db", timeout=READY_TIMEOUT_S) as conn:
        indexed = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        states = {state for (state,) in conn.execute("SELECT state FROM series")}
    return indexed == instances and bool(states) and states <= FINAL

"""A hung worker (issue 23): frozen with SIGSTOP while a series waits, ``/readyz`` answers
503 naming it; under ``appliance serve`` the supervisor kills it once its heartbeat is
``worker.hang_restart_s`` overdue, and a new worker does the work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx

from appliance.triage.supervisor import WorkerProcess
from scripts.harness import ApplianceProcess, tcp_env, wait_until
from tests.helpers.series import write_mr_series


def workers(pid: int) -> list[int]:
    """Children of ``pid`` that have exec'd ``appliance worker``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[-2:-1] == [b"worker"]:
                    found.append(child)
            except FileNotFoundError:
                continue
    return found


def serve(tmp_path: Path, **settings: str) -> ApplianceProcess:
    box = ApplianceProcess(tmp_path / "data", worker_heartbeat_s="2", **settings)
    box.command = "serve"
    return box.start()


def worker_check(box: ApplianceProcess) -> str:
    ready = httpx.get(f"http://127.0.0.1:{box.env['APPLIANCE_WEB_PORT']}/readyz", timeout=30)
    return ready.json()["checks"]["worker"]


def beating(box: ApplianceProcess, pid: int) -> bool:
    return _rows(box, "SELECT COUNT(*) FROM worker_heartbeats WHERE pid = ?", pid) == [(1,)]


def freeze_outside_a_transaction(box: ApplianceProcess, pid: int) -> None:
    """SIGSTOP ``pid`` at a moment it holds no write lock on the database (stop, try the
    lock, and if it is held let the worker go on and stop it again)."""

    def frozen_unlocked() -> bool:
        os.kill(pid, signal.SIGSTOP)
        try:
            with closing(sqlite3.connect(box.data_dir / "appliance.db", timeout=0.5, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            return False

    wait_until(frozen_unlocked, what="the worker frozen outside a transaction")


def send_series(box: ApplianceProcess, tmp_path: Path) -> str:
    series, files = write_mr_series(tmp_path / "mr", 3)
    done = subprocess.run(
        ["storescu", "-aec", "TRIAGE", "127.0.0.1", str(box.port), *map(str, files)],
        env=tcp_env(),
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{box.log.read_text()[-3000:]}"
    return series


def routed(box: ApplianceProcess, series: str) -> list[dict]:
    return [s for s in box.status()["series"] if s["series_instance_uid"] == series and s["state"] == "not-eligible"]


def test_a_frozen_worker_with_a_series_queued_turns_readyz_to_503_naming_it(tmp_path):
    box = serve(tmp_path, worker_hang_restart_s="600")  # the supervisor leaves it alone here
    try:
        first = wait_until(lambda: workers(box.process.pid), timeout=120, what="the worker process")[0]
        wait_until(lambda: beating(box, first), timeout=120, what="the worker's first heartbeat")
        freeze_outside_a_transaction(box, first)  # else reception waits on its lock: the next test's case
        series = send_series(box, tmp_path)
        problem = wait_until(lambda: (w := worker_check(box)) != "ok" and w, timeout=120, what="readyz to name it")
        assert f"(pid {first}) has not advanced" in problem
        os.kill(first, signal.SIGCONT)
        wait_until(lambda: routed(box, series), timeout=120, what="the series to be routed")
        wait_until(lambda: worker_check(box) == "ok", timeout=120, what="readyz to clear")
        assert workers(box.process.pid) == [first]  # not restarted: hang_restart_s is far off
    finally:
        os.kill(first, signal.SIGCONT)
        box.stop()


def test_serve_kills_a_hung_worker_and_a_new_one_does_the_work(tmp_path):
    # Frozen inside a transaction, the worker holds the write lock until it is killed: the
    # supervisor looks every 5 s, so reception is let wait longer than its usual 5 s for it.
    box = serve(tmp_path, worker_hang_restart_s="1", dicom_database_wait_s="60")
    try:
        first = wait_until(lambda: workers(box.process.pid), timeout=120, what="the worker process")[0]
        wait_until(lambda: beating(box, first), timeout=120, what="the worker's first heartbeat")
        os.kill(first, signal.SIGSTOP)
        series = send_series(box, tmp_path)
        wait_until(
            lambda: [p for p in workers(box.process.pid) if p != first], timeout=120, what="a new worker process"
        )
        wait_until(lambda: routed(box, series), timeout=120, what="the series to be routed")
        assert not Path(f"/proc/{first}").exists() or _zombie(first)
        # audited as an alert, which the new worker's upkeep takes into the alerts table
        alerted = wait_until(
            lambda: _rows(box, "SELECT payload FROM alerts WHERE kind = 'alert-worker-hung'"),
            timeout=120,
            what="the hang alert",
        )
        assert json.loads(alerted[0][0])["pid"] == first
    finally:
        box.stop()
    assert f"worker process {first} is hung" in box.log.read_text()


def test_the_supervisor_kills_a_child_its_check_calls_hung_and_starts_another(tmp_path):
    asked: list[int] = []

    def hung(pid: int) -> str | None:
        asked.append(pid)
        return "frozen" if pid == asked[0] else None  # the first child only

    kills: list[tuple[int, str]] = []
    child = WorkerProcess(
        1024,
        [sys.executable, "-c", "import time; time.sleep(600)"],
        hung=hung,
        check_s=0.1,
        killed=lambda pid, reason: kills.append((pid, reason)),
    )
    child.start()
    try:
        second = wait_until(lambda: asked and child.pid not in (None, asked[0]) and child.pid, what="a second child")
        wait_until(lambda: second in asked, what="the second child to be checked")
        assert child.restarts == 1 and child.pid == second  # the second, not hung, is left running
        assert kills == [(asked[0], "frozen")]
    finally:
        child.stop(timeout=5)


def _rows(box: ApplianceProcess, sql: str, *parameters: object) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{box.data_dir / 'appliance.db'}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute(sql, parameters).fetchall()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True

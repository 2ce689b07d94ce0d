"""``Type=notify`` with a watchdog (issue 23): the listener and the worker, as systemd
starts them, send READY=1 once ready and WATCHDOG=1 while their loops advance; a frozen
worker stops the pings. systemd's side is a real unix datagram socket named by
``$NOTIFY_SOCKET``.

Every wait is on an event (a datagram, a process state) with a generous deadline, and
each child is stopped with SIGTERM, a bounded wait, then SIGKILL (a test failure)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.harness import READY_TIMEOUT_S, REPO, free_port, wait_until

#: systemd's WatchdogSec in microseconds; the components ping at half of it.
WATCHDOG_USEC = 200_000


@pytest.fixture
def systemd(tmp_path):
    """The service manager's notification socket."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, path


def start(command: str, data_dir: Path, notify_path: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1",
        "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "0",
    }
    env.pop("WATCHDOG_PID", None)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "appliance.cli", command], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)


def next_message(sock: socket.socket, wanted: bytes, log: Path, timeout: float = READY_TIMEOUT_S) -> None:
    """Receive until ``wanted`` arrives; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            if sock.recv(256) == wanted:
                return
        except TimeoutError:
            pytest.fail(f"no {wanted!r} within {timeout:g} s: {log.read_text()[-2000:]}")


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(256)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


#: How long a process may take to stop on SIGTERM before it counts as ignoring it.
STOP_DEADLINE_S = 180.0


def stop(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the deadline (and fail then)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)  # a frozen process must see the SIGTERM
    process.terminate()
    try:  # a thawed worker first ends the upkeep it was frozen in: slow on a busy CI machine
        process.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=READY_TIMEOUT_S)
        pytest.fail(f"ignored SIGTERM: {log.read_text()[-2000:]}")
    assert process.returncode == 0, log.read_text()[-2000:]


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.parametrize("command", ["listener", "worker"])
def test_ready_then_watchdog_pings(command, systemd, tmp_path):
    sock, path = systemd
    log = tmp_path / f"{command}.log"
    process = start(command, tmp_path / "data", path, log)
    try:
        next_message(sock, b"READY=1", log)
        next_message(sock, b"WATCHDOG=1", log)
        next_message(sock, b"WATCHDOG=1", log)
    finally:
        stop(process, log)


def test_a_frozen_worker_stops_the_pings_and_a_thawed_one_resumes(systemd, tmp_path):
    sock, path = systemd
    log = tmp_path / "worker.log"
    process = start("worker", tmp_path / "data", path, log)
    try:
        next_message(sock, b"READY=1", log)
        next_message(sock, b"WATCHDOG=1", log)
        process.send_signal(signal.SIGSTOP)
        wait_until(lambda: state(process.pid) == "T", what="the worker to stop")
        drain(sock)  # what it sent before it froze
        sock.settimeout(10 * WATCHDOG_USEC / 1e6)  # five ping intervals
        with pytest.raises(TimeoutError):
            sock.recv(256)
        process.send_signal(signal.SIGCONT)
        next_message(sock, b"WATCHDOG=1", log)
    finally:
        stop(process, log)


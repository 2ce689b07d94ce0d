"""``appliance serve`` runs the worker in a child process with a memory limit (issue 13,
finding 3): a worker that dies does not take reception with it, and is restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from appliance.triage.supervisor import limit_memory
from scripts.harness import ApplianceProcess, tcp_env, wait_until
from tests.helpers.dimse import echo
from tests.helpers.series import write_mr_series


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended while we looked
            continue
    return found


def workers(pid: int) -> list[int]:
    """Children of ``pid`` that have exec'd ``appliance worker``: a child seen between
    fork and exec still has the parent's command line and limits."""
    found = []
    for child in children(pid):
        try:
            if (Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[-2:-1] == [b"worker"]):
                found.append(child)
        except FileNotFoundError:
            continue
    return found


def data_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max data size"):
            return int(line.split()[3])
    raise AssertionError("no data limit line")


def test_a_killed_worker_is_restarted_and_reception_never_stops(tmp_path):
    box = ApplianceProcess(tmp_path / "data", worker_memory_limit_mb="1024")
    box.command = "serve"
    box.start()
    try:
        first = wait_until(lambda: workers(box.process.pid), timeout=120, what="the worker process")[0]
        assert data_limit(first) == 1024 * 1024 * 1024
        os.kill(first, signal.SIGKILL)
        # The listener lives in the parent: it answers while the worker is gone.
        assert echo(box.port)
        series, files = write_mr_series(tmp_path / "mr", 3)
        subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(box.port), *map(str, files)],
                       env=tcp_env(), check=True, timeout=120, capture_output=True)
        second = wait_until(lambda: [p for p in workers(box.process.pid) if p != first],
                          timeout=120, what="a new worker process")[0]
        assert data_limit(second) == 1024 * 1024 * 1024
        # The new worker does the work: the MR series ends not-eligible, with the reason.
        entry = wait_until(lambda: [s for s in box.status()["series"]
                                  if s["series_instance_uid"] == series and s["state"] == "not-eligible"],
                         timeout=120, what="the series to be routed")[0]
        assert "no routing rule takes modality MR" in entry["reason"]
    finally:
        box.stop()
    assert not [p for p in (first, second) if Path(f"/proc/{p}").exists()]


def test_the_memory_limit_turns_an_oversized_allocation_into_a_memory_error():
    grab = [sys.executable, "-c", "import numpy; numpy.ones(400 * 2**20, numpy.uint8)"]
    for limit_mb, expected in ((200, 1), (2048, 0)):
        child = subprocess.run(grab, preexec_fn=lambda: limit_memory(limit_mb * 2**20),
                               capture_output=True, timeout=120)
        assert child.returncode == expected, child.stderr
        assert (b"MemoryError" in child.stderr) == bool(expected)


def test_a_killed_serve_leaves_no_orphan_worker(tmp_path):
    box = ApplianceProcess(tmp_path / "data")
    box.command = "serve"
    box.start()
    worker = wait_until(lambda: children(box.process.pid), timeout=120, what="the worker process")[0]
    box.kill9()
    wait_until(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker), what="the orphaned worker to end")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True

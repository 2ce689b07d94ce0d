"""The worker as a child process of ``appliance serve``, with a memory limit, restarted
when it dies.

A series that costs more memory than the box can give must fail alone: the worker runs
in its own process under ``RLIMIT_DATA`` (heap and private mappings, so a NumPy buffer
past the limit raises ``MemoryError`` in the worker and the series fails with that
reason), and if the worker dies anyway (the kernel's OOM killer, a crash in a native
library) the supervisor starts a new one, which takes its dead predecessor's jobs back
at once. A worker that is alive but hung (its heartbeat overdue by
``worker.hang_restart_s``: stopped, deadlocked) is killed so that a new one starts. The
listener, in the parent, never stops receiving.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from appliance import sd_notify

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)
#: Seconds between restarts of a worker that keeps dying, doubling up to the maximum.
RESTART_DELAY_S = (1.0, 60.0)


def limit_memory(limit_bytes: int) -> None:
    """Cap this process's data segment and private mappings (call in the child)."""
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


def _child_setup(limit_bytes: int) -> None:
    """In the child, before exec: the memory cap, and SIGTERM when the parent dies (so a
    killed ``serve`` never leaves an orphan worker holding jobs)."""
    limit_memory(limit_bytes)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerProcess:
    """Runs ``appliance worker`` as a child and restarts it until stopped.

    Parameters
    ----------
    memory_limit_mb : int
        ``RLIMIT_DATA`` of the child, in MiB.
    command : list of str
        The child's command line (default: this interpreter running ``appliance worker``).
    """

    def __init__(
        self,
        memory_limit_mb: int,
        command: list[str] | None = None,
        hung: Callable[[int], str | None] = lambda pid: None,
        check_s: float = 5.0,
        killed: Callable[[int, str], None] = lambda pid, reason: None,
    ):
        self.limit_bytes = memory_limit_mb * 1024 * 1024
        self.command = command or [sys.executable, "-m", "appliance.cli", "worker"]
        self.hung = hung
        self.check_s = check_s
        self.killed = killed
        self.restarts = 0
        self._child: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._child.pid if self._child else None

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen:
        # The parent speaks to systemd for the service; the child's notifications would not count.
        return subprocess.Popen(
            self.command, env=sd_notify.child_environment(), preexec_fn=lambda: _child_setup(self.limit_bytes)
        )

    def _supervise(self) -> None:
        delay = RESTART_DELAY_S[0]
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                self._child = self._spawn()
                child = self._child
            LOG.info("worker process %d started (memory limit %d MiB)", child.pid, self.limit_bytes >> 20)
            started = time.monotonic()
            code = self._wait_or_kill_if_hung(child)
            if self._stop.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > RESTART_DELAY_S[1]:
                delay = RESTART_DELAY_S[0]  # it ran a good while: not a crash loop
            LOG.error("worker process %d exited with %s; restarting in %.0f s", child.pid, code, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RESTART_DELAY_S[1])

    def _wait_or_kill_if_hung(self, child: subprocess.Popen) -> int:
        """Wait for the child to exit; every ``check_s`` ask :attr:`hung` about it (a read:
        the child may hold the database's write lock), kill it (SIGKILL: a stopped process
        ends too) when it says why it is hung, and then tell :attr:`killed`."""
        while True:
            try:
                return child.wait(timeout=self.check_s)
            except subprocess.TimeoutExpired:
                pass
            if self._stop.is_set():
                return child.wait()
            try:
                reason = self.hung(child.pid)
            except Exception:  # the check must never take the supervisor down
                LOG.exception("worker process %d: the hang check failed", child.pid)
                continue
            if reason:
                LOG.error("worker process %d is hung (%s); killing it", child.pid, reason)
                child.kill()
                code = child.wait()
                try:  # only now: a worker frozen inside a transaction held the write lock till it died
                    self.killed(child.pid, reason)
                except Exception:
                    LOG.exception("worker process %d: recording the hang failed", child.pid)
                return code

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the child to finish its series and exit (SIGTERM); kill it after ``timeout``."""
        with self._lock:
            self._stop.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._thread.join(timeout=5)

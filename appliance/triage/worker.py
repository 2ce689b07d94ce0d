"""The worker: the loop that claims a job, has it triaged and hands the decision on.

Each step lives in its stage: the queue in :mod:`appliance.jobs`, the decision in
:class:`appliance.triage.decide.Triage`, what follows from it (result objects or notice,
the records, the sends, the drift row) in :class:`appliance.outcome.recorder.Recorder`.
Between jobs the worker runs the scheduled upkeep it owns (study summaries, drift
windows: :mod:`appliance.outcome.upkeep`), and, with no job waiting, prepares the
instances of series still arriving (:meth:`Worker.prepare_arrivals`), a few at a time,
so a job finds them ready. The shadow model runs after
the active model's outcome is recorded, so it never delays a result.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import sqlite_utils

from appliance import jobs, sd_notify
from appliance.audit import chain as audit_log
from appliance.config import WorkerSettings
from appliance.db import transaction
from appliance.errors import LeaseLost
from appliance.outcome.recorder import Recorder
from appliance.triage.decide import Triage
from appliance.triage.heartbeat import ClockWatch, Heartbeat

LOG = logging.getLogger(__name__)

#: Instances of arriving series prepared per step of the loop, one after the other on the
#: loop's own thread: a job that becomes due waits for four slices at most (about 30 ms),
#: and the listener keeps the other core. Two threads taking turns on the GIL spent half
#: again the CPU time per slice while the listener stored (``docs/benchmarks.md``).
ARRIVALS_PER_STEP = 4


def dead_on_this_host(owner: str, me: str) -> bool:
    """Whether a lease owner ``host:pid:thread`` is a process of this host that no longer
    runs (never ourselves; owners named otherwise are left to their lease)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != me.partition(":")[0] or not pid.isdigit() or owner.split(":")[:2] == me.split(":")[:2]:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Worker:
    """Claims jobs and triages series until stopped.

    Parameters
    ----------
    on_sent : callable, optional
        Called when an outcome queued objects for sending (e.g. wake the sender).
    upkeep : callable, optional
        The scheduled work, called between jobs with the wall-clock time (it runs what is due).
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        settings: WorkerSettings,
        triage: Triage,
        outcome: Recorder,
        name: str | None = None,
        on_sent: Callable[[], None] = lambda: None,
        upkeep: Callable[[float], object] = lambda now: None,
    ):
        self.db = db
        self.settings = settings
        self.triage = triage
        self.outcome = outcome
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.on_sent = on_sent
        self.upkeep = upkeep
        self.heartbeat: Heartbeat | None = None  # beats only in :meth:`run`, the process's loop
        self._stop = threading.Event()

    def run(self) -> None:
        """Work until stopped. Tells systemd READY=1 once warmed up, and WATCHDOG=1 as the
        loop advances: a worker stuck in a job or in the database stops the pings. The
        loop's heartbeat row (:mod:`appliance.triage.heartbeat`) shows it to ``/readyz``
        and to the supervisor of ``appliance serve``."""
        self.expire_dead_incarnations()
        self.triage.warm_up()
        heartbeat = self.heartbeat = Heartbeat(self.db.conn, self.name, self.settings)
        heartbeat.forget(lambda owner: dead_on_this_host(owner, self.name))
        sd_notify.notify("READY=1")
        watchdog = sd_notify.Watchdog.from_environment()
        clock = ClockWatch()
        try:
            while not self._stop.is_set():
                watchdog.progressed()
                self.audit_clock_step(clock.stepped())
                heartbeat.beat()
                worked = self.run_once()
                self.upkeep(time.time())  # after the job: a result is never kept waiting for it
                if not worked and not self.prepare_arrivals():
                    self._stop.wait(self.settings.poll_interval_s)
        finally:
            heartbeat.end()

    def stop(self) -> None:
        self._stop.set()

    def audit_clock_step(self, step_s: float) -> None:
        """Audit a wall-clock step the loop noticed (``clock-stepped``); nothing for 0."""
        if step_s:
            LOG.warning("the wall clock stepped %+.0f s", step_s)
            audit_log.append(self.db, "clock-stepped", {"by_s": round(step_s, 1), "worker": self.name})

    def expire_dead_incarnations(self, now: float | None = None) -> None:
        """End the leases held by workers of this host whose process is gone (a worker
        killed mid-series and restarted): their series are taken again at once."""
        with transaction(self.db.conn) as conn:
            expired = jobs.expire_leases_of(
                conn, lambda owner: dead_on_this_host(owner, self.name), time.time() if now is None else now
            )
        if expired:
            LOG.warning("took back %d job(s) from a worker process that died: %s", len(expired), expired)

    def prepare_arrivals(self) -> int:
        """Prepare a few instances of the series still arriving (:data:`ARRIVALS_PER_STEP`);
        how many."""
        conn = self.db.conn  # files may arrive between the reads: each is keyed by its sha256
        try:
            arriving = [(uid, *jobs.series_files(conn, uid)) for uid in jobs.arriving(conn)]
            return self.triage.prepare_arrivals(arriving, ARRIVALS_PER_STEP)
        except Exception:  # preparing ahead is only a head start: jobs still decide without it
            LOG.exception("preparing arrived instances failed; their series are prepared when complete")
            self.triage.prepared.retain(set())
            return 0

    def run_once(self, now: float | None = None) -> bool:
        """Claim and work one job; False when there was none."""
        now = time.time() if now is None else now
        if not jobs.claimable(self.db.conn, now, self.settings.lease_s):
            return False  # between preparation steps too: no write lock taken for nothing
        abandoned: list[jobs.Job] = []
        with transaction(self.db.conn) as conn:
            job = jobs.claim(conn, self.name, self.settings.lease_s, self.settings.max_attempts, now, abandoned)
        for lost in abandoned:
            if self.outcome.record_abandoned(self.triage.abandoned(lost)).queued:
                self.on_sent()
        if job is None:
            return False
        if self.heartbeat is not None:
            self.heartbeat.beat(job.id)
        decision = self.triage.decide(job)
        try:
            if self.outcome.record(decision).queued:
                self.on_sent()
        except LeaseLost:
            LOG.warning("job %d: lease expired before the outcome was recorded; another worker has it", job.id)
            return True
        shadow = self.triage.shadow(decision)
        if shadow is not None:
            self.outcome.record_shadow(decision, shadow)
        return True

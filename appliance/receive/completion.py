"""Series completion: when has a series finished arriving?

A series is complete when its association was released and its sender's release grace
passed (``release_grace_by_ae``; else 0 once the sender's last ``learn_grace_after_series``
series each came in one association and none was reopened; else ``release_grace_s``) with
no other open association still sending to it, or after ``quiet_period_s`` with no new
instance (whatever the associations do). :class:`SeriesTracker` knows which open
association carries which series; :func:`run_completion` checks every
``COMPLETION_POLL_S`` and queues what is complete through the index (the state change
itself is :func:`appliance.jobs.queue_complete_series`). A late instance reopens a
series; completion then queues it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

from appliance import sd_notify
from appliance.config import DicomSettings
from appliance.jobs import SeriesFacts
from appliance.receive.index import IngestIndex

LOG = logging.getLogger(__name__)

COMPLETION_POLL_S = 0.1
#: How often each sender's run of clean series is read again (``learn_grace_after_series``).
LEARN_EVERY_S = 5.0


class SeriesTracker:
    """Which series each open association has carried, for release-based completion."""

    def __init__(self) -> None:
        self._series: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def open(self, association_id: str) -> None:
        with self._lock:
            self._series[association_id] = set()

    def add(self, association_id: str, series_uid: str) -> None:
        with self._lock:
            self._series.setdefault(association_id, set()).add(series_uid)

    def close(self, association_id: str) -> set[str]:
        """Forget an association; return its series that no other open one carries."""
        with self._lock:
            carried = self._series.pop(association_id, set())
            return carried - self._all()

    def still_sending(self) -> set[str]:
        with self._lock:
            return self._all()

    def _all(self) -> set[str]:
        return set().union(*self._series.values()) if self._series else set()


def _grace(settings: DicomSettings, learned: dict[str, int], calling_ae: str) -> float:
    return settings.release_grace_for(calling_ae, learned.get(calling_ae.strip(), 0))


def run_completion(
    settings: DicomSettings,
    index: IngestIndex,
    tracker: SeriesTracker,
    priority: Callable[[SeriesFacts], int],
    stop: threading.Event,
) -> None:
    """Queue finished series until ``stop``; each pass that reaches the database feeds
    the systemd watchdog, so a stuck database stops the pings."""
    watchdog = sd_notify.Watchdog.from_environment()
    learned: dict[str, int] = {}
    learned_at = float("-inf")
    while not stop.wait(COMPLETION_POLL_S):
        try:
            if settings.learn_grace_after_series and time.monotonic() - learned_at >= LEARN_EVERY_S:
                learned, learned_at = index.clean_runs(), time.monotonic()
            queued = index.queue_complete_series(
                settings.quiet_period_s,
                partial(_grace, settings, learned),
                tracker.still_sending(),
                priority=priority,
            )
        except Exception:
            LOG.exception("series completion check failed; retrying")
            continue
        watchdog.progressed()
        if queued:
            LOG.info("queued %d series for triage", len(queued))

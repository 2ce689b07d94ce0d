"""Outbound alerts: the audit events that need a person go to syslog and a JSON webhook,
each once.

The audit log is the source: every event of a kind in
:data:`appliance.audit.episodes.ALERT_KINDS` (a flagged result that could not be
delivered, a drift alert, a hung worker killed, the data folder's free space below the
floor, the hub out of reach, the hub finding the audit chain altered) becomes one
``alerts`` row (this module is the table's one writer), keyed by the event's audit
sequence number. The disk check is made here, each run: falling
below the floor records ``alert-disk-below-floor``, coming back above it
``disk-above-floor`` (no alert), so one episode alerts once. Syslog hears of
it when it is picked up; the webhook is retried every run until it answers 2xx. Each
delivery is audited (``alert-sent``), so the audit log says who was told and when. The
worker runs this between series: a webhook that is down costs one timeout per run.

Webhook body: ``{"appliance": "<AE title>", "alert": "<kind>", "seq": N, "at": "<audit
time>", "details": {...the audit payload...}}``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import syslog
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from appliance.audit.chain import append_in
from appliance.audit.episodes import ALERT_KINDS, DISK_LOW, DISK_OK, observe
from appliance.config import AlertSettings
from appliance.db import transaction
from appliance.disk import below_floor

LOG = logging.getLogger(__name__)
#: Posts one JSON body to the webhook; raises on failure (httpx.HTTPError).
Post = Callable[[str, dict[str, Any], float], None]


@dataclass(frozen=True)
class Alert:
    seq: int
    kind: str
    at: str
    details: dict[str, Any]

    def text(self) -> str:
        """One line for syslog."""
        return f"appliance alert {self.kind} (audit seq {self.seq}): {json.dumps(self.details, sort_keys=True)}"


def post_json(url: str, body: dict[str, Any], timeout_s: float) -> None:
    httpx.post(url, json=body, timeout=timeout_s).raise_for_status()


def to_syslog(alert: Alert) -> None:
    syslog.openlog("appliance", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_WARNING, alert.text())


class Alerts:
    """Picks up new alert events and delivers them.

    Parameters
    ----------
    settings : AlertSettings
        ``[alerts]``.
    source : str
        Who is speaking, in the webhook body (the DICOM AE title).
    data_dir : Path
        The data folder, checked against ``floor_bytes`` (``dicom.min_free_disk_mb``).
    post, log : callable, optional
        The webhook and syslog calls (tests pass their own).
    """

    def __init__(
        self,
        settings: AlertSettings,
        source: str,
        data_dir: Path,
        floor_bytes: int,
        post: Post = post_json,
        log: Callable[[Alert], None] = to_syslog,
    ):
        self.settings = settings
        self.source = source
        self.data_dir = data_dir
        self.floor_bytes = floor_bytes
        self._post = post
        self._log = log

    def run(self, conn: sqlite3.Connection, now: float) -> int:
        """Pick up new events, tell syslog, post what the webhook has not taken; return
        how many alerts were delivered this run."""
        self._check_disk(conn)
        for alert in self._pick_up(conn, now):
            if self.settings.syslog:
                self._log(alert)
        delivered = 0
        for alert in self._undelivered(conn):
            if not self._deliver(conn, alert, now):
                break  # the webhook is down: one timeout per run, the rest wait for the next
            delivered += 1
        return delivered

    def _check_disk(self, conn: sqlite3.Connection) -> None:
        """Record the disk floor's episodes in the audit log: one event when the free space
        falls below the floor, one when it is back above."""
        problem = below_floor(self.data_dir, self.floor_bytes)
        with transaction(conn):
            observe(
                conn,
                DISK_LOW,
                DISK_OK,
                None if problem is None else {"problem": problem},
                {"data_dir": str(self.data_dir)},
            )

    def _pick_up(self, conn: sqlite3.Connection, now: float) -> list[Alert]:
        marks = ", ".join("?" * len(ALERT_KINDS))
        with transaction(conn):
            rows = conn.execute(
                f"SELECT seq, at, kind, payload FROM audit_log WHERE kind IN ({marks}) "
                "AND seq > (SELECT coalesce(max(seq), 0) FROM alerts) ORDER BY seq",
                ALERT_KINDS,
            ).fetchall()
            conn.executemany(
                "INSERT INTO alerts (seq, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                [(seq, kind, payload, now) for seq, _at, kind, payload in rows],
            )
        return [Alert(seq, kind, at, json.loads(payload)) for seq, at, kind, payload in rows]

    def _undelivered(self, conn: sqlite3.Connection) -> list[Alert]:
        rows = conn.execute(
            "SELECT a.seq, l.at, a.kind, a.payload FROM alerts a JOIN audit_log l ON l.seq = a.seq "
            "WHERE a.delivered_at IS NULL ORDER BY a.seq"
        ).fetchall()
        return [Alert(seq, kind, at, json.loads(payload)) for seq, at, kind, payload in rows]

    def _deliver(self, conn: sqlite3.Connection, alert: Alert, now: float) -> bool:
        url = self.settings.webhook_url
        error = None
        if url:
            body = {"appliance": self.source, "alert": alert.kind, "seq": alert.seq, "at": alert.at,
                    "details": alert.details}  # fmt: skip
            try:
                self._post(url, body, self.settings.timeout_s)
            except httpx.HTTPError as exc:
                error = str(exc)[:200] or type(exc).__name__
                LOG.warning("alert %s (audit seq %d) not taken by the webhook: %s", alert.kind, alert.seq, error)
        with transaction(conn):
            conn.execute(
                "UPDATE alerts SET attempts = attempts + 1, last_error = ?, delivered_at = ? WHERE seq = ?",
                (error, None if error else now, alert.seq),
            )
            if error is None:
                append_in(
                    conn,
                    "alert-sent",
                    {"seq": alert.seq, "alert": alert.kind, "syslog": self.settings.syslog, "webhook": bool(url)},
                )
        return error is None

"""One sync round (``appliance sync``, run by a systemd timer): queue the closed days'
drift reports, push the pending reports in order with backoff, refresh the release
metadata, download and stage in shadow, check in. Also enrolment and the status view.
The only writer of ``sync_rounds``.

A round never raises for the hub being away: reports stay queued and the round records
why, so the next one (the timer) picks up where this one stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from appliance import __version__, failpoints
from appliance.audit import chain as audit_log
from appliance.audit import episodes
from appliance.config import Settings
from appliance.db import open_database, transaction
from appliance.drift.service import alert_summary, day_of
from appliance.errors import SyncError
from appliance.models.registry import ModelRegistry
from appliance.sync import client as hub
from appliance.sync import releases, report_queue, withdrawals
from appliance.sync.identity import Enrolment, load_or_create_key, sync_dir
from appliance.sync.report_queue import queue_closed_days


def _http(settings: Settings, base_url: str):
    s = settings.sync
    return hub.http_client(base_url, s.timeout_s, s.ca_certificates, s.client_certificate, s.client_private_key)


def enrol(settings: Settings, hub_url: str, token: str) -> Enrolment:
    """Make (once) the device key, spend the token at the hub, pin the TUF root it sends."""
    data_dir = settings.data_dir
    if Enrolment.path(data_dir).exists():
        raise SyncError(
            f"already enrolled ({Enrolment.path(data_dir)}); a new identity needs a new data dir "
            "or that file removed by an operator"
        )
    key = load_or_create_key(data_dir)
    with _http(settings, hub_url) as http:
        answer = hub.enrol(http, token, key, __version__)
    try:
        enrolment = Enrolment(hub_url.rstrip("/"), answer["device_id"], answer["ring"])
        root = answer["root"].encode()
    except (KeyError, AttributeError) as exc:
        raise SyncError(f"the hub's enrolment answer lacks {exc}") from None
    enrolment.save(data_dir, root)
    db = open_database(settings.db_path)
    audit_log.append(
        db, "sync-enrolled", {"hub": enrolment.hub_url, "device_id": enrolment.device_id, "ring": enrolment.ring}
    )
    return enrolment


@dataclass
class RoundResult:
    queued: int = 0
    pushed: int = 0
    rejected: int = 0
    push_error: str | None = None
    metadata_refreshed: bool = False
    staged: list[str] = field(default_factory=list)
    release_error: str | None = None
    checkin_error: str | None = None
    audit: str | None = None  # the hub's comparison of the audit chain with its anchor
    withdrawn: list[str] = field(default_factory=list)


def push_reports(
    conn: sqlite3.Connection,
    client: hub.HubClient,
    settings: Settings,
    result: RoundResult,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Send pending reports in queue order, a batch at a time, backing off while the hub
    is unreachable; stop after ``sync.round_attempts`` failed tries in a row."""
    s = settings.sync
    delay, failures = s.retry_initial_s, 0
    while batch := report_queue.pending(conn, s.batch_size):
        try:
            answer = client.post("/v1/reports", {"reports": [r.as_upload() for r in batch]})
            failpoints.hit("mid-sync")  # the hub holds the batch; the queue still says pending
            delivered, rejected = report_queue.record_results(conn, batch, answer.get("results", []))
        except (hub.HubError, ValueError) as exc:
            report_queue.record_failure(conn, batch, str(exc))
            failures += 1
            retryable = getattr(exc, "retryable", True)
            if not retryable or failures >= s.round_attempts:
                result.push_error = str(exc)
                return
            sleep(delay)
            delay = min(delay * 2, s.retry_max_s)
            continue
        result.pushed += delivered
        result.rejected += rejected
        delay, failures = s.retry_initial_s, 0


def _last_refresh(conn: sqlite3.Connection) -> float | None:
    return conn.execute("SELECT MAX(finished_at) FROM sync_rounds WHERE metadata_refreshed = 1").fetchone()[0]


def run_round(
    settings: Settings,
    registry: ModelRegistry,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> RoundResult:
    """One round, on the registry's database connection; the outcome is recorded in
    ``sync_rounds`` and returned, with the episodes it opens or closes (:func:`watch`). The
    registry (built by :class:`appliance.parts.Parts`) stages releases in shadow after the
    same golden tests as an activation. ``clock`` dates the round (tests move it)."""
    data_dir = settings.data_dir
    enrolment = Enrolment.load(data_dir)
    pinned_root = Enrolment.root_path(data_dir).read_bytes()
    key = load_or_create_key(data_dir)
    conn = registry.db.conn
    result = RoundResult()
    started = clock()
    result.queued = len(queue_closed_days(conn, settings.drift, enrolment.device_id, day_of(started)))
    with _http(settings, enrolment.hub_url) as http:
        client = hub.HubClient(http, enrolment.device_id, key, clock)
        push_reports(conn, client, settings, result, sleep)
        try:
            staged = releases.refresh_and_stage(
                conn,
                registry,
                http,
                sync_dir(data_dir),
                pinned_root,
                enrolment.ring,
                __version__,
                settings.sync.download_attempts,
                settings.sync.retry_refused_s,
            )
            result.metadata_refreshed = True
            result.staged, result.release_error = staged.staged, staged.error
        except SyncError as exc:
            result.release_error = str(exc)
        refreshed_at = clock() if result.metadata_refreshed else _last_refresh(conn)
        try:
            answer = check_in(
                client,
                conn,
                {
                    "appliance_version": __version__,
                    "models": [{"model_id": m.id, "version": m.version, "state": m.state} for m in registry.models()],
                    "metadata_refreshed_at": refreshed_at,
                    "release_error": result.release_error[:500] if result.release_error else None,
                    "drift_alerts": drift_alerts(conn),
                },
            )
            result.audit = answer.get("audit") if isinstance(answer.get("audit"), str) else None
            withdrawals.follow_ring(conn, data_dir, enrolment, answer.get("ring"))
            result.withdrawn = withdrawals.apply(conn, registry, answer.get("withdrawn"))
        except hub.HubError as exc:
            result.checkin_error = str(exc)
    with transaction(conn):
        conn.execute(
            "INSERT INTO sync_rounds (started_at, finished_at, pushed, push_error, metadata_refreshed, "
            "release_error, staged) VALUES (?,?,?,?,?,?,?)",
            (
                started,
                clock(),
                result.pushed,
                result.push_error,
                int(result.metadata_refreshed),
                result.release_error,
                json.dumps(result.staged),
            ),
        )
        watch(conn, result, enrolment.hub_url, clock(), settings.sync.alert_after_s)
    return result


def watch(conn: sqlite3.Connection, result: RoundResult, hub_url: str, now: float, alert_after_s: float) -> None:
    """After a round is recorded, inside its transaction: the episodes a person must hear
    of. ``alert-sync-failing`` when this round did not reach the hub (its release metadata
    unrefreshed) and no round has for ``alert_after_s`` (counted from the first round when
    none ever did), ``sync-reached-again`` when one does; ``alert-audit-disagrees`` when the
    hub says the audit chain does not match its anchor, ``audit-agrees-again`` when it says
    it is consistent again."""
    if result.metadata_refreshed:
        episodes.observe(conn, episodes.SYNC_FAILING, episodes.SYNC_BACK, None, {"hub": hub_url})
    else:
        last_contact = _last_refresh(conn)
        first_round = conn.execute("SELECT MIN(started_at) FROM sync_rounds").fetchone()[0]
        silent_s = now - (last_contact if last_contact is not None else first_round)
        if silent_s >= alert_after_s:
            failing = {
                "hub": hub_url,
                "last_reached": utc(last_contact),
                "hours_without": round(silent_s / 3600, 1),
                "error": (result.release_error or result.push_error or result.checkin_error or "")[:500],
            }
            episodes.observe(conn, episodes.SYNC_FAILING, episodes.SYNC_BACK, failing)
    if result.audit is not None:
        problem = None if result.audit == "consistent" else {"hub": hub_url, "problem": result.audit[:500]}
        episodes.observe(conn, episodes.AUDIT_DISAGREES, episodes.AUDIT_AGREES, problem, {"hub": hub_url})


def audit_evidence(conn: sqlite3.Connection, anchor_seq: int | None) -> dict:
    """The audit chain's head, and its hash at the hub's anchor ``anchor_seq`` as the log
    holds it now (null where that row is gone), for the hub to compare
    (``training.hub.audit``)."""
    head = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    at = None
    if anchor_seq is not None:
        row = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (anchor_seq,)).fetchone()
        at = {"seq": anchor_seq, "hash": row[0] if row else None}
    return {"head": {"seq": head[0], "hash": head[1]} if head else None, "at": at}


def check_in(client: hub.HubClient, conn: sqlite3.Connection, payload: dict) -> dict:
    """Ask which audit anchor the hub holds, then check in with the chain's evidence at it;
    the hub's answer says whether the chain agrees (``audit``). A hub without the anchor
    route (older) gets the check-in alone."""
    try:
        held = client.post("/v1/audit-anchor", {}).get("seq")
    except hub.HubError as exc:
        if exc.status != 404:
            raise
        return client.post("/v1/checkin", payload)
    seq = held if isinstance(held, int) and not isinstance(held, bool) and held >= 1 else None
    return client.post("/v1/checkin", {**payload, "audit": audit_evidence(conn, seq)})


def drift_alerts(conn: sqlite3.Connection) -> list[dict]:
    """The box's active drift alerts as the check-in carries them: model id, version and
    feature name only (the hub shows them beside its own figure)."""
    alerts = {(a["model_id"], a["model_version"], a["feature"]) for a in alert_summary(conn)["alerts"]}
    return [{"model_id": m, "version": v, "feature": f} for m, v, f in sorted(alerts)]


def utc(seconds: float | None) -> str | None:
    """A stored POSIX time as ISO 8601 UTC to the second (``2026-03-01T09:00:00Z``)."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(conn: sqlite3.Connection, data_dir, now: float | None = None) -> dict:
    """Enrolment, report queue, last round and release-metadata freshness (read only); what
    ``appliance sync status`` prints and ``appliance status --json`` carries as ``sync``."""
    now = time.time() if now is None else now
    try:
        enrolment = asdict(Enrolment.load(data_dir))
    except SyncError:
        enrolment = None
    last = conn.execute(
        "SELECT started_at, finished_at, pushed, push_error, metadata_refreshed, release_error, "
        "staged FROM sync_rounds ORDER BY id DESC LIMIT 1"
    ).fetchone()
    last_round = None
    if last:
        started, finished, pushed, push_error, metadata_refreshed, release_error, staged_json = last
        last_round = {
            "started_at": utc(started),
            "finished_at": utc(finished),
            "pushed": pushed,
            "push_error": push_error,
            "metadata_refreshed": bool(metadata_refreshed),
            "release_error": release_error,
            "staged": json.loads(staged_json),
        }
    staged = [
        {"target": t, "model_id": m, "version": v, "state": s, "reason": r}
        for t, m, v, s, r in conn.execute(
            "SELECT target, model_id, version, state, reason FROM sync_releases ORDER BY at"
        )
    ]
    refreshed = _last_refresh(conn)
    return {
        "enrolled": enrolment is not None,
        "enrolment": enrolment,
        "reports": report_queue.counts(conn),
        "last_round": last_round,
        "metadata": {
            **releases.metadata_state(sync_dir(data_dir), now),
            "last_refreshed_at": utc(refreshed),
            "age_s": None if refreshed is None else round(now - refreshed, 1),
        },
        "releases": staged,
        "withdrawn": withdrawals.listed(conn),
    }


def status(settings: Settings) -> dict:
    """:func:`summary` of this box's database and data dir."""
    return summary(open_database(settings.db_path).conn, settings.data_dir)

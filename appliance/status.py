"""What ``appliance status --json`` reports: counts and the state of every series."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.drift.service import alert_summary
from appliance.send.outbox import Outbox
from appliance.states import IN_FLIGHT, ModelState, OutboxState, SeriesState


def senders(conn: Any) -> dict[str, dict[str, int]]:
    """Per calling AE (the series' first sender): how many series, how many arrived over
    more than one association, how many were completed more than once (an instance
    arrived after completion: the series was triaged again). ``release_grace_by_ae``
    can be 0 for a sender whose series are never split (docs/conformance.md)."""
    rows = conn.execute(
        "SELECT s.calling_ae, COUNT(*), SUM(a.associations > 1), SUM(s.generation > 1) FROM series s JOIN "
        "(SELECT series_instance_uid, COUNT(DISTINCT association_id) AS associations FROM instances "
        "GROUP BY series_instance_uid) a USING (series_instance_uid) GROUP BY s.calling_ae ORDER BY s.calling_ae"
    )
    return {ae: {"series": n, "split": split, "reopened": reopened} for ae, n, split, reopened in rows}


def collect_status(db: sqlite_utils.Database, data_dir: Path | None = None) -> dict[str, Any]:
    """Read the current state from the database (no writes); with ``data_dir``, the sync
    state (enrolment, queued reports, last round, release metadata age) too."""
    conn = db.conn
    instances = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    without_series = conn.execute("SELECT COUNT(*) FROM instances WHERE series_instance_uid = ''").fetchone()[0]
    jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    # The current result of each series only: superseded ones (an earlier generation) are left out.
    series = [
        _series_entry(*row)
        for row in conn.execute(
            "SELECT s.study_instance_uid, s.series_instance_uid, s.modality, s.instances, s.state, s.reason, s.flag, "
            "s.score, s.model, r.sr_instance_uid, r.sc_instance_uid, n.sr_instance_uid FROM series s "
            "LEFT JOIN inference_results r ON r.series_instance_uid = s.series_instance_uid AND r.role = ? "
            "AND r.superseded = 0 AND r.generation = s.generation AND s.state = ? "
            "LEFT JOIN notices n ON n.series_instance_uid = s.series_instance_uid AND n.generation = s.generation "
            "AND s.state IN (?, ?) "
            "ORDER BY s.first_received_at",
            (ModelState.ACTIVE, SeriesState.TRIAGED, SeriesState.NOT_ELIGIBLE, SeriesState.FAILED),
        )
    ]
    status = {
        "instances_received": instances,
        # Stored as sent but never triaged: the sender left out the Series Instance UID.
        "instances_without_series": without_series,
        "jobs": jobs,
        # Result objects per destination and state (pending, sent, dead).
        "outbox": Outbox(db).counts(),
        # Flagged results given up on (dead-lettered): PACS never got them.
        "alerts": [
            {
                "kind": "flagged-result-dead-lettered",
                "outbox_id": item.id,
                "sop_instance_uid": item.sop_instance_uid,
                "study_instance_uid": item.study_instance_uid,
                "destination": item.destination,
                "error": item.last_error,
            }
            for item in Outbox(db).alerts()
        ],
        "series": series,
        # What the release grace buys, per sender: its series, those split across
        # associations, those reopened by an instance after completion (a re-run).
        "senders": senders(conn),
        # Drift alerts not yet cleared, per model version and feature.
        "drift": alert_summary(conn),
    }
    if data_dir is not None:
        from appliance.sync.round import summary  # TUF and httpx only when asked

        status["sync"] = summary(conn, data_dir)
    return status


def _series_entry(
    study: str,
    series: str,
    modality: str,
    instances: int,
    state: str,
    reason: str | None,
    flag: int | None,
    score: float | None,
    model: str | None,
    sr: str | None,
    sc: str | None,
    notice: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "study_instance_uid": study,
        "series_instance_uid": series,
        "modality": modality,
        "instances": instances,
        "state": state,
    }
    if state == SeriesState.TRIAGED and score is not None:
        entry.update(flag=bool(flag), score=round(score, 4), model=model)
        if sr:
            entry["result"] = {"sr_instance_uid": sr, "sc_instance_uid": sc}
    if notice:
        entry["notice_sr_instance_uid"] = notice
    if reason:
        entry["reason"] = reason
    return entry


def missing_files(conn: sqlite3.Connection, limit: int = 200) -> list[str]:
    """The files the box still needs that are not where the database says (read only).

    Needed: the spooled instances of every series still in flight (arriving, queued or
    running), the result objects waiting in the outbox, and the files of the models in
    service. A database restored or moved without its folders, or at another path than
    the one it names, lists them here; ``/readyz`` and ``appliance restore`` use it.
    At most ``limit`` of each kind are looked at: a readiness check stays cheap.
    """
    in_flight = ", ".join("?" * len(IN_FLIGHT))
    queries = (
        (
            f"SELECT i.path FROM instances i JOIN series s ON s.series_instance_uid = i.series_instance_uid "
            f"WHERE s.state IN ({in_flight}) ORDER BY i.received_at DESC LIMIT ?",
            (*sorted(IN_FLIGHT), limit),
        ),
        ("SELECT path FROM outbox WHERE state = ? ORDER BY id DESC LIMIT ?", (OutboxState.PENDING, limit)),
        (
            "SELECT path FROM models WHERE state IN (?, ?) ORDER BY id",
            (ModelState.ACTIVE, ModelState.SHADOW),
        ),
    )
    missing: list[str] = []
    for sql, parameters in queries:
        missing += [path for (path,) in conn.execute(sql, parameters) if not Path(path).exists()]
    return missing


def missing_files_words(missing: list[str]) -> str:
    """``missing`` (not empty) as one sentence naming the first (pure)."""
    many = len(missing) != 1
    return (
        f"{len(missing)} file{'s' if many else ''} that series in flight, the outbox or the models need "
        f"{'are' if many else 'is'} missing (first: {missing[0]}); restore the data folder, or the database "
        "with `appliance restore` at the path it now has"
    )

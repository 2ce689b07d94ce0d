"""The drift tables' only writer (``drift_series``, ``drift_evaluations``,
``drift_monitor``, ``drift_alerts``; schema in :mod:`appliance.db`).

Every function runs on the caller's connection and inside the caller's transaction, so
a series' features commit with its triage result and an alert with its audit event.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from appliance.drift.aggregate import Aggregate
from appliance.drift.monitor import Evaluation, FeatureState, MonitorState


def insert_series(
    conn: sqlite3.Connection,
    job_id: int,
    day: dt.date,
    model_id: str,
    model_version: str,
    outcome: str,
    features: dict | None,
    score: float | None,
    flag: bool | None,
    now: float,
) -> None:
    """Record one job's drift features (a retried job's newer outcome replaces the older)."""
    conn.execute(
        "INSERT OR REPLACE INTO drift_series (job_id, day, model_id, model_version, outcome, score, flag, "
        "features, recorded_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            job_id,
            day.isoformat(),
            model_id,
            model_version,
            outcome,
            score,
            None if flag is None else int(flag),
            None if features is None else json.dumps(features),
            now,
        ),
    )


def series_records(
    conn: sqlite3.Connection, model_id: str, model_version: str, day: dt.date
) -> Iterator[dict[str, Any]]:
    """The series records of one model version on one day."""
    rows = conn.execute(
        "SELECT outcome, score, flag, features FROM drift_series WHERE model_id = ? AND model_version = ? AND day = ?",
        (model_id, model_version, day.isoformat()),
    )
    for outcome, score, flag, features in rows:
        yield {
            "outcome": outcome,
            "score": score,
            "flag": flag,
            "features": None if features is None else json.loads(features),
        }


def model_versions(conn: sqlite3.Connection) -> list[tuple[str, str, dt.date]]:
    """Model versions with recorded series, with the first day they had one."""
    rows = conn.execute(
        "SELECT model_id, model_version, MIN(day) FROM drift_series "
        "GROUP BY model_id, model_version ORDER BY model_id, model_version"
    )
    return [(m, v, dt.date.fromisoformat(d)) for m, v, d in rows]


def model_version_days(conn: sqlite3.Connection, before: dt.date) -> list[tuple[str, str, dt.date]]:
    """(model id, version, day) of every day before ``before`` with a recorded series, oldest first."""
    rows = conn.execute(
        "SELECT DISTINCT model_id, model_version, day FROM drift_series WHERE day < ? "
        "ORDER BY day, model_id, model_version",
        (before.isoformat(),),
    )
    return [(m, v, dt.date.fromisoformat(d)) for m, v, d in rows]


def days_with_series(conn: sqlite3.Connection) -> list[dt.date]:
    return [dt.date.fromisoformat(d) for (d,) in conn.execute("SELECT DISTINCT day FROM drift_series ORDER BY day")]


def load_monitor(conn: sqlite3.Connection, model_id: str, model_version: str) -> tuple[dt.date | None, MonitorState]:
    """The last evaluated day and the monitor state of a model version."""
    row = conn.execute(
        "SELECT last_day, baseline, features FROM drift_monitor WHERE model_id = ? AND model_version = ?",
        (model_id, model_version),
    ).fetchone()
    if row is None:
        return None, MonitorState()
    last_day, baseline, features = row
    state = MonitorState(
        None if baseline is None else Aggregate.from_json(json.loads(baseline)),
        {k: FeatureState(list(v["history"]), bool(v["alerting"])) for k, v in json.loads(features).items()},
    )
    return dt.date.fromisoformat(last_day), state


def save_monitor(
    conn: sqlite3.Connection, model_id: str, model_version: str, last_day: dt.date, state: MonitorState
) -> None:
    baseline = None if state.baseline is None else json.dumps(state.baseline.to_json())
    features = json.dumps({k: {"history": f.history, "alerting": f.alerting} for k, f in state.features.items()})
    conn.execute(
        "INSERT OR REPLACE INTO drift_monitor (model_id, model_version, last_day, baseline, features) "
        "VALUES (?,?,?,?,?)",
        (model_id, model_version, last_day.isoformat(), baseline, features),
    )


def save_evaluations(
    conn: sqlite3.Connection,
    model_id: str,
    model_version: str,
    day: dt.date,
    series: int,
    evaluations: list[Evaluation],
) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO drift_evaluations (model_id, model_version, day, feature, statistic, value, "
        "threshold, exceeded, source, series, details) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                model_id,
                model_version,
                day.isoformat(),
                e.feature,
                e.statistic,
                e.value,
                e.threshold,
                int(e.exceeded),
                e.source,
                series,
                json.dumps(e.details),
            )
            for e in evaluations
        ],
    )


def evaluations(conn: sqlite3.Connection, model_id: str, model_version: str) -> list[dict[str, Any]]:
    """Every stored evaluation of a model version, oldest first."""
    rows = conn.execute(
        "SELECT day, feature, statistic, value, threshold, exceeded, source, series FROM drift_evaluations "
        "WHERE model_id = ? AND model_version = ? ORDER BY day, feature",
        (model_id, model_version),
    )
    keys = ("day", "feature", "statistic", "value", "threshold", "exceeded", "source", "series")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def open_alert(
    conn: sqlite3.Connection, model_id: str, model_version: str, e: Evaluation, day: dt.date, seq: int
) -> None:
    conn.execute(
        "INSERT INTO drift_alerts (model_id, model_version, feature, statistic, value, threshold, "
        "raised_day, raised_seq) VALUES (?,?,?,?,?,?,?,?)",
        (model_id, model_version, e.feature, e.statistic, e.value, e.threshold, day.isoformat(), seq),
    )


def close_alert(
    conn: sqlite3.Connection, model_id: str, model_version: str, feature: str, day: dt.date, seq: int
) -> None:
    conn.execute(
        "UPDATE drift_alerts SET cleared_day = ?, cleared_seq = ? WHERE model_id = ? AND "
        "model_version = ? AND feature = ? AND cleared_day IS NULL",
        (day.isoformat(), seq, model_id, model_version, feature),
    )


def alerts(conn: sqlite3.Connection, active_only: bool = False) -> list[dict[str, Any]]:
    """Alerts, newest first (``active_only``: those not cleared)."""
    where = " WHERE cleared_day IS NULL" if active_only else ""
    rows = conn.execute(
        "SELECT model_id, model_version, feature, statistic, value, threshold, raised_day, "
        f"cleared_day FROM drift_alerts{where} ORDER BY id DESC"
    )
    keys = ("model_id", "model_version", "feature", "statistic", "value", "threshold", "raised_day", "cleared_day")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def reference_of(conn: sqlite3.Connection, model_id: str, model_version: str) -> tuple[str, str] | None:
    """(package folder, drift reference file name) of an installed model, read from ``models``."""
    row = conn.execute(
        "SELECT path, manifest FROM models WHERE id = ? AND version = ?", (model_id, model_version)
    ).fetchone()
    if row is None:
        return None
    return row[0], json.loads(row[1]).get("drift_reference", "")

"""Drift monitoring on the box: recording series, closing daily windows, status, gauges.

The outcome stage calls :func:`record_series` once per finished job inside its
recording transaction. The worker's scheduled upkeep (:mod:`appliance.outcome.upkeep`)
closes every window that ended before today with :func:`evaluate_due`; an alert raised
or cleared is an audit event in the same transaction. Status, reports, plots and gauges
only read.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from appliance.audit.chain import append_in
from appliance.config import DriftSettings
from appliance.drift import tables
from appliance.drift.aggregate import Aggregate, aggregate, reason_code
from appliance.drift.monitor import evaluate, step
from appliance.states import SeriesState

LOG = logging.getLogger(__name__)


def day_of(now: float) -> dt.date:
    """The UTC day of a POSIX time."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def record_series(
    conn: sqlite3.Connection,
    *,
    job_id: int,
    model_id: str,
    model_version: str,
    features: dict | None,
    score: float | None = None,
    flag: bool | None = None,
    failure: str | None = None,
    now: float,
) -> None:
    """Record one finished job of a model version, inside the caller's write transaction.

    Parameters
    ----------
    features : dict or None
        :func:`appliance.drift.features.series_features` of a triaged series; None when
        the series failed (then ``failure`` is the worker's reason, kept only as a code).
    """
    outcome = SeriesState.TRIAGED.value if failure is None else reason_code(failure)
    tables.insert_series(
        conn,
        job_id,
        day_of(now),
        model_id,
        model_version,
        outcome,
        features if failure is None else None,
        score,
        flag,
        now,
    )


def evaluate_due(conn: sqlite3.Connection, settings: DriftSettings, today: dt.date) -> int:
    """Close every window ending before ``today`` not yet judged; return how many were.

    Runs in the caller's write transaction.
    """
    closed = 0
    for model_id, version, first_day in tables.model_versions(conn):
        last_day, state = tables.load_monitor(conn, model_id, version)
        day = first_day if last_day is None else last_day + dt.timedelta(days=1)
        if day >= today:
            continue
        reference = load_reference(conn, model_id, version)
        days: dict[dt.date, Aggregate] = {}
        while day < today:
            window = window_aggregate(conn, model_id, version, day, settings.window_days, days)
            evaluations, events = step(state, window, reference, settings)
            tables.save_evaluations(conn, model_id, version, day, window.series, evaluations)
            for event in events:
                e = event.evaluation
                seq = append_in(
                    conn,
                    event.kind,
                    {
                        "model_id": model_id,
                        "model_version": version,
                        "feature": e.feature,
                        "statistic": e.statistic,
                        "value": round(e.value, 6),
                        "threshold": round(e.threshold, 6),
                        "threshold_source": e.source,
                        "window_end": day.isoformat(),
                        "window_days": settings.window_days,
                        "series": window.series,
                    },
                )
                if event.kind == "drift-alert":
                    tables.open_alert(conn, model_id, version, e, day, seq)
                else:
                    tables.close_alert(conn, model_id, version, e.feature, day, seq)
                LOG.warning(
                    "%s: %s %s feature %s (%s %.4g, threshold %.4g)",
                    event.kind,
                    model_id,
                    version,
                    e.feature,
                    e.statistic,
                    e.value,
                    e.threshold,
                )
            tables.save_monitor(conn, model_id, version, day, state)
            closed += 1
            day += dt.timedelta(days=1)
    return closed


def day_aggregate(conn: sqlite3.Connection, model_id: str, version: str, day: dt.date) -> Aggregate:
    return aggregate(tables.series_records(conn, model_id, version, day))


def window_aggregate(
    conn: sqlite3.Connection,
    model_id: str,
    version: str,
    end: dt.date,
    window_days: int,
    cache: dict[dt.date, Aggregate] | None = None,
) -> Aggregate:
    """The sum of the ``window_days`` days ending with ``end``."""
    cache = {} if cache is None else cache
    total = Aggregate()
    for back in range(window_days):
        day = end - dt.timedelta(days=back)
        if day not in cache:
            cache[day] = day_aggregate(conn, model_id, version, day)
        total = total.add(cache[day])
    return total


def load_reference(conn: sqlite3.Connection, model_id: str, version: str) -> dict | None:
    """The package's drift reference of an installed model version, or None."""
    where = tables.reference_of(conn, model_id, version)
    if where is None or not where[1]:
        return None
    return _read_reference(str(Path(where[0]) / where[1]))


@functools.lru_cache(maxsize=16)
def _read_reference(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        LOG.warning("drift reference %s unreadable (%s); judging against the baseline only", path, exc)
        return None


def drift_status(conn: sqlite3.Connection, settings: DriftSettings, today: dt.date) -> dict[str, Any]:
    """Per model version: the current window's counts, statistics and thresholds, the
    last closed window's judgement, and the alerts (read only). A feature's ``exceeded``
    is None while the current window holds fewer than ``min_series`` series: it is not
    judged yet, whatever its statistic says."""
    models = []
    for model_id, version, _ in tables.model_versions(conn):
        last_day, state = tables.load_monitor(conn, model_id, version)
        window = window_aggregate(conn, model_id, version, today, settings.window_days)
        current = evaluate(window, load_reference(conn, model_id, version), state.baseline, settings)
        judged = window.series >= settings.min_series
        history = tables.evaluations(conn, model_id, version)
        last = [h for h in history if last_day is not None and h["day"] == last_day.isoformat()]
        models.append(
            {
                "model_id": model_id,
                "model_version": version,
                "window": {
                    "end": today.isoformat(),
                    "days": settings.window_days,
                    "series": window.series,
                    "flagged": window.flagged,
                    "not_analysed": window.not_analysed,
                    "judged": judged,
                    "min_series": settings.min_series,
                },
                "features": _feature_summary(window, current, judged),
                "last_closed_window": last_day.isoformat() if last_day else None,
                "last_evaluations": last,
                "baseline_series": state.baseline.series if state.baseline else None,
                "alerting": state.alerting(),
            }
        )
    return {"models": models, "alerts": tables.alerts(conn, active_only=True)}


def _feature_summary(window: Aggregate, current: list, judged: bool) -> dict[str, Any]:
    by_name = {e.feature: e for e in current}
    out: dict[str, Any] = {}
    for name, counts in window.histograms.items():
        out[name] = {"kind": "histogram", "count": int(counts.sum())}
    for name, tally in window.monitored_categories().items():
        out[name] = {"kind": "categorical", "counts": tally}
    for name, e in by_name.items():
        out.setdefault(name, {}).update(
            statistic=e.statistic,
            value=round(e.value, 6),
            threshold=round(e.threshold, 6),
            threshold_source=e.source,
            exceeded=e.exceeded if judged else None,
            details={k: round(v, 6) for k, v in e.details.items()},
        )
    return out


def alert_summary(conn: sqlite3.Connection) -> dict[str, Any]:
    """What ``appliance status --json`` shows of drift: the active alerts."""
    active = tables.alerts(conn, active_only=True)
    return {"active_alerts": len(active), "alerts": active}


def gauges(conn: sqlite3.Connection) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus gauges ``(name, labels, value)``: the last closed window's statistic and
    threshold per feature, and the active alert count (for the web's ``/metrics``)."""
    out: list[tuple[str, dict[str, str], float]] = []
    for model_id, version, _ in tables.model_versions(conn):
        last_day, _ = tables.load_monitor(conn, model_id, version)
        if last_day is None:
            continue
        for e in tables.evaluations(conn, model_id, version):
            if e["day"] != last_day.isoformat():
                continue
            labels = {"model": model_id, "version": version, "feature": e["feature"], "statistic": e["statistic"]}
            out.append(("triage_drift_statistic", labels, float(e["value"])))
            out.append(("triage_drift_threshold", labels, float(e["threshold"])))
            out.append(("triage_drift_exceeded", labels, float(e["exceeded"])))
    out.append(("triage_drift_active_alerts", {}, float(len(tables.alerts(conn, active_only=True)))))
    return out

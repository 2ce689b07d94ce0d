"""The compliance report of a period (``appliance report compliance --from --to``): what
the box received and decided, what it delivered, which models were in service with their
validation figures and who changed them, the alerts, sign-ins, and whether the audit log
verifies. Read only; no patient identifier appears in it (counts, codes, UIDs of no one).
"""

from __future__ import annotations

import json
import sqlite3
import time as clock
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils
from jinja2 import Environment

from appliance import __version__, formats, uptime
from appliance.audit.chain import verify_database
from appliance.states import ModelState, OutboxState, SeriesState


@dataclass
class ComplianceReport:
    """One period's figures; ``period_end`` is exclusive (the day after ``--to``)."""

    period_start: str
    period_end: str
    appliance_version: str
    received: dict[str, int] = field(default_factory=dict)
    decided: dict[str, int] = field(default_factory=dict)
    not_analysed: list[dict[str, Any]] = field(default_factory=list)
    flagged: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    models_in_service: list[dict[str, Any]] = field(default_factory=list)
    model_changes: list[dict[str, Any]] = field(default_factory=list)
    inferences_by_model: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)
    sign_ins: dict[str, int] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    #: The DICOM listener's downtime in the measured part of the period (``appliance.uptime``).
    availability: dict[str, Any] = field(default_factory=dict)
    #: Components started on a data folder not encrypted at rest (``allow_unencrypted``).
    unencrypted_starts: int = 0

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def period(start: date, end: date) -> tuple[float, float]:
    """``[start 00:00 UTC, the day after end 00:00 UTC)`` as epoch seconds (pure)."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    first = datetime.combine(start, time(), UTC)
    last = datetime.combine(end, time(), UTC).timestamp() + 86400
    return first.timestamp(), last


def compliance_report(db: sqlite_utils.Database, start: date, end: date, now: float | None = None) -> ComplianceReport:
    """The report of the days ``start`` to ``end`` (UTC, both included), as of ``now``."""
    t0, t1 = period(start, end)
    iso0 = datetime.fromtimestamp(t0, UTC).isoformat()
    iso1 = datetime.fromtimestamp(t1, UTC).isoformat()
    conn = db.conn
    report = ComplianceReport(iso0, iso1, __version__)

    def one(sql: str, *parameters: Any) -> int:
        return int(conn.execute(sql, parameters).fetchone()[0] or 0)

    report.received = {
        "studies": one(
            "SELECT COUNT(DISTINCT study_instance_uid) FROM series "
            "WHERE first_received_at >= ? AND first_received_at < ?",
            t0,
            t1,
        ),
        "series": one("SELECT COUNT(*) FROM series WHERE first_received_at >= ? AND first_received_at < ?", t0, t1),
        "instances": one("SELECT COUNT(*) FROM instances WHERE received_at >= ? AND received_at < ?", t0, t1),
    }
    # The series received in the period, by where each stands now.
    states = dict(
        conn.execute(
            "SELECT state, COUNT(*) FROM series WHERE first_received_at >= ? AND first_received_at < ? GROUP BY state",
            (t0, t1),
        ).fetchall()
    )
    report.decided = {state.value: int(states.get(state.value, 0)) for state in SeriesState}
    report.not_analysed = [
        {"state": state, "reason": reason or "", "series": count}
        for state, reason, count in conn.execute(
            "SELECT state, reason, COUNT(*) FROM series WHERE first_received_at >= ? AND first_received_at < ? "
            "AND state IN (?, ?) GROUP BY state, reason ORDER BY COUNT(*) DESC, state, reason",
            (t0, t1, SeriesState.NOT_ELIGIBLE, SeriesState.FAILED),
        )
    ]
    report.flagged = one(
        "SELECT COUNT(*) FROM inference_results WHERE role = ? AND flag = 1 AND superseded = 0 "
        "AND created_at >= ? AND created_at < ?",
        ModelState.ACTIVE,
        t0,
        t1,
    )
    report.inferences_by_model = [
        {"model_id": model, "version": version, "role": role, "series": count, "flagged": flagged}
        for model, version, role, count, flagged in conn.execute(
            "SELECT model_id, model_version, role, COUNT(*), SUM(flag) FROM inference_results "
            "WHERE created_at >= ? AND created_at < ? GROUP BY model_id, model_version, role ORDER BY 1, 2, 3",
            (t0, t1),
        )
    ]
    report.delivered = {
        "objects_sent": one("SELECT COUNT(*) FROM outbox WHERE sent_at >= ? AND sent_at < ?", t0, t1),
        "dead_letters": one(
            "SELECT COUNT(*) FROM outbox WHERE state = ? AND updated_at >= ? AND updated_at < ?",
            OutboxState.DEAD,
            t0,
            t1,
        ),
        "pending_now": one("SELECT COUNT(*) FROM outbox WHERE state = ?", OutboxState.PENDING),
    }
    report.models_in_service = [
        _model(row)
        for row in conn.execute(
            "SELECT id, version, state, package_sha256, manifest FROM models WHERE state IN (?, ?) ORDER BY id, state",
            (ModelState.ACTIVE, ModelState.SHADOW),
        )
    ]
    audit_rows = conn.execute(
        "SELECT seq, at, kind, payload FROM audit_log WHERE at >= ? AND at < ? ORDER BY seq", (iso0, iso1)
    ).fetchall()
    kinds = Counter(kind for _, _, kind, _ in audit_rows)
    for seq, at, kind, payload in audit_rows:
        if kind.startswith("model-"):
            details = json.loads(payload)
            report.model_changes.append(
                {
                    "seq": seq,
                    "at": at,
                    "change": kind,
                    "model_id": details.get("model_id"),
                    "version": details.get("version"),
                    "replaces": details.get("replaces"),
                    "by": details.get("actor"),
                }
            )
    report.alerts = dict(
        conn.execute(
            "SELECT kind, COUNT(*) FROM alerts WHERE created_at >= ? AND created_at < ? GROUP BY kind ORDER BY kind",
            (t0, t1),
        ).fetchall()
    )
    report.alerts["drift-alert (audited)"] = kinds.get("drift-alert", 0)
    report.sign_ins = {
        "signed_in": kinds.get("web-login", 0),
        "failed": kinds.get("web-login-failed", 0),
        "throttled": kinds.get("web-login-throttled", 0),
        "study_views": kinds.get("study-viewed", 0),
    }
    problems = verify_database(db)
    report.audit = {
        "rows_in_period": len(audit_rows),
        "first_seq": audit_rows[0][0] if audit_rows else None,
        "last_seq": audit_rows[-1][0] if audit_rows else None,
        "chain_verified": not problems,
        "problems": [f"seq {p.seq}: {p.problem}" for p in problems[:20]],
        "events": dict(sorted(kinds.items())),
    }
    report.availability = _availability(conn, t0, t1, clock.time() if now is None else now)
    report.unencrypted_starts = kinds.get("storage-unencrypted", 0)
    return report


def _availability(conn: sqlite3.Connection, t0: float, t1: float, now: float) -> dict[str, Any]:
    found = uptime.availability(uptime.spans(conn), t0, t1, now)

    def iso(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")

    return {
        "measured_from": iso(found.measured_from) if found.measured_from is not None else None,
        "measured_to": iso(found.measured_to),
        "measured_s": round(found.measured_s),
        "down_s": round(found.down_s),
        "share_up": found.share_up,
        "outages": [{"from": iso(a), "to": iso(b), "s": round(b - a)} for a, b in found.outages],
        "accuracy_s": uptime.EVERY_S,
    }


def _model(row: sqlite3.Row | tuple) -> dict[str, Any]:
    model_id, version, state, sha, manifest_text = row
    manifest = json.loads(manifest_text)
    point = manifest.get("operating_point", {})
    return {
        "model_id": model_id,
        "version": version,
        "state": state,
        "package_sha256": sha,
        "threshold": point.get("threshold"),
        "validation_sensitivity": point.get("validation_sensitivity"),
        "validation_specificity": point.get("validation_specificity"),
    }


def _first_day(report: ComplianceReport) -> str:
    return datetime.fromisoformat(report.period_start).date().isoformat()


def _last_day(report: ComplianceReport) -> str:
    """The ``--to`` day: ``period_end`` is the start of the day after it."""
    return (datetime.fromisoformat(report.period_end) - timedelta(days=1)).date().isoformat()


def _downtime_words(found: dict[str, Any]) -> str:
    if found["measured_from"] is None:
        return "Downtime: not measured (the DICOM listener did not run in the period)"
    return (
        f"Downtime of the DICOM listener: {formats.duration(found['down_s'])} of "
        f"{formats.duration(found['measured_s'])} measured from {found['measured_from']} "
        f"(up {formats.percent(found['share_up'])}; to within {formats.duration(found['accuracy_s'])})"
    )


def as_text(report: ComplianceReport) -> str:
    """The report for a terminal or a printout (pure)."""
    lines = [
        f"Compliance report, {_first_day(report)} to {_last_day(report)} (UTC days, both included; "
        f"appliance {report.appliance_version})",
        "",
        "Received: " + ", ".join(f"{n} {what}" for what, n in report.received.items()),
        "Series received in the period, as they stand: "
        + ", ".join(f"{n} {state}" for state, n in report.decided.items()),
        f"Flagged (current results): {report.flagged}",
        "Not analysed, by reason:",
        *(f"  {r['series']:>6}  {r['state']}: {r['reason']}" for r in report.not_analysed),
        "Results: " + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in report.delivered.items()),
        "Models in service:",
        *(
            f"  {m['model_id']} {m['version']} ({m['state']}): threshold {formats.score(m['threshold'])}, "
            f"validation sensitivity {formats.percent(m['validation_sensitivity'])}, "
            f"specificity {formats.percent(m['validation_specificity'])}"
            for m in report.models_in_service
        ),
        "Model changes:",
        *(f"  {c['at']}  {c['change']} {c['model_id']} {c['version']} by {c['by']}" for c in report.model_changes),
        "Inferences by model:",
        *(
            f"  {i['model_id']} {i['version']} ({i['role']}): {i['series']} series, {i['flagged']} flagged"
            for i in report.inferences_by_model
        ),
        "Alerts: " + (", ".join(f"{n} {kind}" for kind, n in report.alerts.items()) or "none"),
        "Sign-ins: " + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in report.sign_ins.items()),
        f"Audit log: {report.audit['rows_in_period']} events in the period (seq {report.audit['first_seq']} to "
        f"{report.audit['last_seq']}); chain {'verified' if report.audit['chain_verified'] else 'BROKEN'}",
        *(f"  {p}" for p in report.audit["problems"]),
        _downtime_words(report.availability),
        *(f"  down {o['from']} to {o['to']} ({formats.duration(o['s'])})" for o in report.availability["outages"]),
        "Data at rest: "
        + (
            f"NOT ENCRYPTED at {formats.count(report.unencrypted_starts, 'start')} in the period "
            "(allow_unencrypted = true)"
            if report.unencrypted_starts
            else "no start in the period ran on a data folder not encrypted at rest"
        ),
    ]
    return "\n".join(lines) + "\n"


#: The printable report (:func:`as_html`), beside this module.
_HTML = Environment(autoescape=True).from_string(Path(__file__).with_name("compliance_report.html").read_text())


def as_html(report: ComplianceReport) -> str:
    """The report as one self-contained HTML document, for a browser or a printer (pure)."""
    text = as_text(report).splitlines()
    return _HTML.render(
        r=report,
        first=_first_day(report),
        last=_last_day(report),
        score=formats.score,
        percent=formats.percent,
        duration=formats.duration,
        downtime=_downtime_words(report.availability),
        at_rest=next(line for line in text if line.startswith("Data at rest: ")),
    )

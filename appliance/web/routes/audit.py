"""The audit page (biomed, admin): the hash-chained log, filtered and paged, its check,
its export (itself an audit event), and the compliance report of a period."""

from __future__ import annotations

import datetime as dt
import io
from urllib.parse import urlencode

from fastapi import HTTPException, Query, Request
from fastapi.responses import Response

from appliance.audit import chain as audit_log
from appliance.audit.chain import verify_database
from appliance.audit.export import export
from appliance.compliance import as_html, as_text, compliance_report, period
from appliance.db import transaction
from appliance.web.deps import Database, Now
from appliance.web.routes.common import MAX_PAGE, render, router
from appliance.web.security import SignedIn

operations = router("operations")
PAGE_ROWS = 100


def routers():
    return [operations]


@operations.get("/admin/audit")
def audit_page(
    request: Request,
    db: Database,
    now: Now,
    kind: str = "",
    study: str = "",
    since: str = "",
    until: str = "",
    verify: int = 0,
    page: int = Query(1, ge=1, le=MAX_PAGE),
):
    conn = db.conn
    where, params = _audit_filter(kind, study, since, until)
    total = conn.execute(f"SELECT COUNT(*) FROM audit_log{where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT seq, at, kind, payload FROM audit_log{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
        [*params, PAGE_ROWS, (page - 1) * PAGE_ROWS],
    ).fetchall()
    kinds = [k for (k,) in conn.execute("SELECT DISTINCT kind FROM audit_log ORDER BY kind")]
    query = {k: v for k, v in (("kind", kind), ("study", study), ("since", since), ("until", until)) if v}
    return render(
        request,
        "admin_audit.html",
        section="audit",
        rows=rows,
        total=total,
        kinds=kinds,
        kind=kind,
        study=study,
        since=since,
        until=until,
        problems=verify_database(db) if verify else None,
        page=page,
        pages=max((total + PAGE_ROWS - 1) // PAGE_ROWS, 1),
        query=query,
        export_query=urlencode(query),
        page_url=lambda n: "/admin/audit?" + urlencode({**query, "page": n}),
        compliance=_last_days(now, COMPLIANCE_DAYS),
    )


#: The compliance form's period when the page opens: the last 30 UTC days, today included.
COMPLIANCE_DAYS = 30


def _last_days(now: float, days: int) -> tuple[str, str]:
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return (today - dt.timedelta(days=days - 1)).isoformat(), today.isoformat()


def _audit_filter(kind: str, study: str, since: str, until: str) -> tuple[str, list]:
    clauses, params = [], []
    if kind:
        clauses.append("kind = ?")
        params.append(kind)
    if study:
        clauses.append("instr(payload, ?) > 0")
        params.append(study.strip())
    for text, op, field, shift in ((since, ">=", "since", 0), (until, "<", "until", 1)):
        if text:  # a UTC day, as the page shows the rows' times
            moment = utc_day(text, field) + dt.timedelta(days=shift)
            clauses.append(f"at {op} ?")
            params.append(moment.isoformat(timespec="microseconds"))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@operations.get("/admin/audit/export")
def audit_export(db: Database, principal: SignedIn, format: str = "csv", kind: str = ""):
    if format not in ("csv", "json"):
        raise HTTPException(400, f"format: {format!r} is not csv or json")
    with transaction(db.conn) as conn:
        audit_log.append_in(
            conn, "web-audit-exported", {"format": format, "kind": kind or None, "actor": principal.actor}
        )
    out = io.StringIO()
    export(db, out, format, kind or None)
    return Response(
        out.getvalue(),
        media_type="text/csv" if format == "csv" else "application/json",
        headers={"Content-Disposition": f'attachment; filename="audit.{format}"'},
    )


@operations.get("/admin/compliance")
def compliance_download(
    db: Database,
    principal: SignedIn,
    start: str = Query(..., alias="from", max_length=10),
    end: str = Query(..., alias="to", max_length=10),
    format: str = "json",
):
    """The compliance report of ``from`` to ``to`` (days, UTC) as a file, what
    ``appliance report compliance`` prints; the download is audited."""
    if format not in ("json", "text", "html"):
        raise HTTPException(400, f"format: {format!r} is not json, text or html")
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
        period(first, last)
    except ValueError as exc:
        raise HTTPException(400, f"from/to: {exc}") from None
    report = compliance_report(db, first, last)
    with transaction(db.conn) as conn:
        audit_log.append_in(
            conn, "web-compliance-exported", {"from": start, "to": end, "format": format, "actor": principal.actor}
        )
    body, media, suffix = {
        "json": lambda: (report.as_json(), "application/json", "json"),
        "text": lambda: (as_text(report), "text/plain", "txt"),
        "html": lambda: (as_html(report), "text/html", "html"),
    }[format]()
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="compliance-{start}-{end}.{suffix}"'},
    )


def utc_day(text: str, field: str) -> dt.datetime:
    """The start of the UTC day ``YYYY-MM-DD``; a clear error naming the field."""
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise HTTPException(400, f"{field}: {text!r} is not a date (YYYY-MM-DD)") from None

"""The radiologist's pages: the worklist, a study, its heat map, feedback."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response

from appliance.config import Settings
from appliance.errors import AccessError
from appliance.outcome.upkeep import STUDY_SUMMARY, last_ran
from appliance.states import StudyState
from appliance.web import feedback, results, studies
from appliance.web.deps import Connection, Now, SettingsDep
from appliance.web.routes.common import MAX_PAGE, render, router, study_or_404
from appliance.web.security import SignedIn

clinical = router("clinical")


def routers():
    return [clinical]


def day_start(text: str, field: str) -> float:
    """Local midnight of ``YYYY-MM-DD`` in seconds; a clear error naming the field."""
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").timestamp()
    except ValueError:
        raise HTTPException(400, f"{field}: {text!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Selection:
    """What a worklist URL selects: the filters, and the same as URL parameters (for the
    links that keep them)."""

    filters: studies.Filters
    query: dict[str, str]


def selection(state: str = "", modality: str = "", model: str = "", since: str = "", until: str = "") -> Selection:
    """The worklist's filters from the URL; a 400 naming the field that is malformed."""
    if state and state not in set(StudyState):
        raise HTTPException(400, f"state: {state!r} is not one of {', '.join(StudyState)}")
    filters = studies.Filters(
        state=state,
        modality=modality.strip().upper()[:16],
        model=model.strip()[:64],
        since=day_start(since, "since") if since else None,
        until=day_start(until, "until") + 86400 if until else None,
    )
    given = (("state", state), ("modality", modality), ("model", model), ("since", since), ("until", until))
    return Selection(filters, {k: v for k, v in given if v})


#: The worklist's filters, as a typed dependency (the pages and ``/api/studies`` share them).
Selected = Annotated[Selection, Depends(selection)]


def _context(
    conn: sqlite3.Connection, settings: Settings, now: float, selected: Selection, page: int, day: str
) -> dict:
    rows, total = studies.page(conn, selected.filters, page, settings.web.page_size)
    today = dt.date.fromtimestamp(now).isoformat()
    day = day or today
    start = day_start(day, "day")
    query = selected.query
    pages = max((total + settings.web.page_size - 1) // settings.web.page_size, 1)
    return dict(
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        query=query,
        filters=selected.filters,
        ledger=studies.ledger(conn, start, start + 86400),
        day=day,
        today=today,
        now=now,
        summary_at=last_ran(conn, STUDY_SUMMARY),
        states=list(StudyState),
        poll_s=settings.web.poll_interval_s,
        rows_url="/worklist/rows?" + urlencode({**query, "page": page, "day": day}),
        page_url=lambda n: "/worklist?" + urlencode({**query, "page": n, "day": day}),
    )


@clinical.get("/worklist")
def worklist(
    request: Request,
    conn: Connection,
    settings: SettingsDep,
    now: Now,
    selected: Selected,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    day: str = "",
):
    return render(request, "worklist.html", **_context(conn, settings, now, selected, page, day))


@clinical.get("/worklist/rows")
def worklist_rows(
    request: Request,
    conn: Connection,
    settings: SettingsDep,
    now: Now,
    selected: Selected,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    day: str = "",
):
    """The ledger and the table body, for the page's poll to swap in."""
    return render(request, "worklist_live.html", **_context(conn, settings, now, selected, page, day))


@clinical.get("/studies/{study_uid}")
def study_page(
    request: Request, conn: Connection, settings: SettingsDep, now: Now, principal: SignedIn, study_uid: str
):
    summary = study_or_404(conn, study_uid)
    studies.record_view(conn, principal.actor, study_uid, "page")
    series = studies.series_of(conn, study_uid)
    for entry in series:
        sr = studies.result_file(conn, settings.results_dir, study_uid, entry["sr_instance_uid"] or "")
        entry["sr_lines"] = results.sr_lines(sr) if sr else None
        entry["deliveries"] = studies.deliveries(conn, entry["sr_instance_uid"] or "")
        entry["notice_deliveries"] = studies.deliveries(conn, entry["notice_instance_uid"] or "")
        entry["series_number"] = studies.series_number(conn, entry["series_instance_uid"])
        entry["has_capture"] = (
            bool(entry["sc_instance_uid"])
            and studies.result_file(conn, settings.results_dir, study_uid, entry["sc_instance_uid"]) is not None
        )
    return render(
        request,
        "study.html",
        study=summary,
        series=series,
        feedback=feedback.of_study(conn, study_uid),
        verdicts=feedback.VERDICTS,
        cards=_model_cards(conn),
        now=now,
        saved=request.query_params.get("saved") == "1",
        destinations=[d.text for d in settings.dicom.destinations],
    )


def _model_cards(conn: sqlite3.Connection) -> dict[str, dict]:
    """Per model label: finding, operating point, input and the card text from its package."""
    cards = {}
    for model_id, version, manifest, path in conn.execute("SELECT id, version, manifest, path FROM models"):
        data = json.loads(manifest)
        card = Path(path) / data.get("model_card", "")
        try:
            text = card.read_text(errors="replace")[:20000] if card.is_file() else ""
        except OSError:
            text = ""
        cards[f"{model_id} {version}"] = {
            "finding": data.get("finding", ""),
            "operating_point": data.get("operating_point") or {},
            "input": data.get("input") or {},
            "text": text,
        }
    return cards


@clinical.get("/studies/{study_uid}/capture/{sop_uid}.png")
def capture(conn: Connection, settings: SettingsDep, study_uid: str, sop_uid: str):
    path = studies.result_file(conn, settings.results_dir, study_uid, sop_uid)
    if path is None:
        raise HTTPException(404, "no such result image")
    return Response(results.capture_png(path), media_type="image/png", headers={"Cache-Control": "private, no-store"})


@clinical.post("/studies/{study_uid}/feedback")
def give_feedback(
    conn: Connection,
    principal: SignedIn,
    study_uid: str,
    series_uid: str = Form(..., max_length=64),
    verdict: str = Form(..., max_length=32),
    comment: str = Form("", max_length=feedback.MAX_COMMENT),
):
    if not studies.is_uid(study_uid) or not studies.is_uid(series_uid):
        raise AccessError("not a study or series UID")
    feedback.record(conn, study_uid, series_uid, verdict, comment, principal.name)
    return RedirectResponse(f"/studies/{study_uid}?saved=1#feedback", status_code=303)

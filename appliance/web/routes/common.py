"""Helpers shared by the page routers."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.responses import Response

from appliance.web import deps, studies
from appliance.web.security import require

#: The highest page number a list takes: past any real history, and its offset in rows
#: still fits SQLite's 64-bit OFFSET (a larger one was a 500, found by schemathesis).
MAX_PAGE = 1_000_000


def router(area: str, **kwargs: Any) -> APIRouter:
    """A router whose every route needs ``area`` (``public`` ones need nothing)."""
    dependencies = [] if area == "public" else [Depends(require(area))]
    return APIRouter(tags=[area], dependencies=dependencies, **kwargs)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """A page with the signed-in principal and the navigation it may see."""
    context.setdefault("principal", getattr(request.state, "principal", None))
    return deps.templates(request).TemplateResponse(request, template, context, status_code=status_code)


def study_or_404(conn: sqlite3.Connection, study_uid: str) -> dict:
    """The worklist's summary of one study; 404 for a malformed or unknown UID, the same
    answer for both so a UID cannot be probed."""
    if not studies.is_uid(study_uid):
        raise HTTPException(404, "no such study")
    summary = studies.study(conn, study_uid)
    if summary is None:
        raise HTTPException(404, "no such study")
    return summary

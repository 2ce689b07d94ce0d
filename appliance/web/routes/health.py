"""``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics``."""

from __future__ import annotations

import socket
import sqlite3

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance.states import JobState, ModelState
from appliance.web.metrics import exposition, registry_for
from appliance.web.routes.common import db, router

public = router("public")
operations = router("operations")


def routers():
    return [public, operations]


@public.get("/healthz")
def healthz():
    return {"status": "alive"}


def readiness(request: Request) -> dict[str, str | None]:
    """Each check's problem, or None when it passes."""
    settings = request.app.state.settings
    conn = db(request)
    checks: dict[str, str | None] = {}
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        checks["database"] = None
    except sqlite3.Error as exc:
        checks["database"] = f"not writable: {exc}"
    host = "127.0.0.1" if settings.dicom.bind_address in ("0.0.0.0", "") else settings.dicom.bind_address
    try:
        with socket.create_connection((host, settings.dicom.port), timeout=2):
            checks["listener"] = None
    except OSError as exc:
        checks["listener"] = f"DICOM port {settings.dicom.port} not accepting: {exc.strerror or exc}"
    # The worker keeps no heartbeat row: it is stale when a job has waited longer than a lease.
    oldest = conn.execute("SELECT MIN(created_at) FROM jobs WHERE state = ?", (JobState.QUEUED,)).fetchone()[0]
    waited = request.app.state.clock() - oldest if oldest is not None else 0.0
    checks["worker"] = None if waited <= settings.worker.lease_s else f"a job has waited {waited:.0f} s"
    active = conn.execute("SELECT COUNT(*) FROM models WHERE state = ?", (ModelState.ACTIVE,)).fetchone()[0]
    checks["model"] = None if active else "no model is active"
    return checks


@public.get("/readyz")
def readyz(request: Request):
    checks = readiness(request)
    ready = not any(checks.values())
    return JSONResponse(
        {"ready": ready, "checks": {k: v or "ok" for k, v in checks.items()}}, status_code=200 if ready else 503
    )


@operations.get("/metrics")
def metrics(request: Request):
    state = request.app.state
    if not hasattr(state, "metrics_registry"):
        state.metrics_registry = registry_for(state.connection)
    return Response(exposition(state.metrics_registry), media_type=CONTENT_TYPE_LATEST)

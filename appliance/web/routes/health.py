"""``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics``."""

from __future__ import annotations

import socket
import sqlite3

from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance.config import Settings
from appliance.db import waiting_at_most
from appliance.disk import below_floor
from appliance.states import JobState, ModelState
from appliance.status import missing_files, missing_files_words
from appliance.triage.heartbeat import beats
from appliance.web.deps import Connection, Metrics, Now, SettingsDep
from appliance.web.metrics import exposition
from appliance.web.routes.common import router

public = router("public")
operations = router("operations")


def routers():
    return [public, operations]


@public.get("/healthz")
def healthz():
    return {"status": "alive"}


#: How many files of each kind (spooled instances in flight, outbox objects) readiness looks for.
READINESS_FILES = 50

#: How long readiness waits for the database's write lock (ms), not the connection's 30 s.
DATABASE_WAIT_MS = 2000


def readiness(conn: sqlite3.Connection, settings: Settings, now: float) -> dict[str, str | None]:
    """Each check's problem, or None when it passes."""
    checks: dict[str, str | None] = {}
    try:
        with waiting_at_most(conn, DATABASE_WAIT_MS):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        checks["database"] = None
    except sqlite3.Error as exc:
        checks["database"] = f"not writable within {DATABASE_WAIT_MS / 1000:g} s: {exc}"
    host = "127.0.0.1" if settings.dicom.bind_address in ("0.0.0.0", "") else settings.dicom.bind_address
    try:
        with socket.create_connection((host, settings.dicom.port), timeout=2):
            checks["listener"] = None
    except OSError as exc:
        checks["listener"] = f"DICOM port {settings.dicom.port} not accepting: {exc.strerror or exc}"
    checks["worker"] = worker_problem(conn, settings, now)
    active = conn.execute("SELECT COUNT(*) FROM models WHERE state = ?", (ModelState.ACTIVE,)).fetchone()[0]
    checks["model"] = None if active else "no model is active"
    checks["disk"] = below_floor(settings.data_dir, settings.dicom.min_free_disk_bytes)
    missing = missing_files(conn, READINESS_FILES)
    checks["files"] = missing_files_words(missing) if missing else None
    return checks


def worker_problem(conn: sqlite3.Connection, settings: Settings, now: float) -> str | None:
    """With series queued: every worker past its promised heartbeat (named), or, with no
    heartbeat at all, a job waiting longer than a lease; else None."""
    oldest = conn.execute("SELECT MIN(created_at) FROM jobs WHERE state = ?", (JobState.QUEUED,)).fetchone()[0]
    if oldest is None:
        return None
    known = beats(conn)
    if known:
        late = [beat for beat in known if now > beat.expect_by]
        return "; ".join(beat.words(now) for beat in late) if len(late) == len(known) else None
    waited = now - oldest
    return (
        None if waited <= settings.worker.lease_s else f"a job has waited {waited:.0f} s and no worker has a heartbeat"
    )


@public.get("/readyz")
def readyz(conn: Connection, settings: SettingsDep, now: Now):
    checks = readiness(conn, settings, now)
    ready = not any(checks.values())
    return JSONResponse(
        {"ready": ready, "checks": {k: v or "ok" for k, v in checks.items()}}, status_code=200 if ready else 503
    )


@operations.get("/metrics")
def metrics(registry: Metrics):
    return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

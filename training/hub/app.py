"""The hub's HTTP surface (FastAPI).

Box-facing (JSON; every request but enrolment signed, see :mod:`appliance.sync.signing`)::

    POST /v1/enrol      token + public key + proof of possession -> device id, ring, TUF root
    POST /v1/reports    a batch of drift reports, each stored once by report id
    POST /v1/checkin    versions, models, release-metadata age, the box's active drift alerts,
                        its audit chain head and its hash at the hub's anchor
    POST /v1/audit-anchor   the sequence number of the audit anchor the hub holds for the box

Public, integrity from TUF signatures rather than the channel::

    GET /tuf/metadata/{role}.json    TUF metadata (root versions, targets, snapshot, timestamp)
    GET /tuf/targets/{name}          model packages, with HTTP range requests

Operators: ``GET /fleet`` (one row per site) and ``GET /releases`` (each release's field
evidence and its promotion rule, :mod:`training.hub.releases`), an operator token as
Bearer or as the password of HTTP Basic; ``GET /healthz``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from training.hub import fleet, releases, service
from training.hub.repository import Repository
from training.hub.store import HubDatabase

log = logging.getLogger("training.hub")
_METADATA_NAME = re.compile(r"^(\d+\.root|root|targets|snapshot|timestamp)\.json$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.tar$")
MAX_BODY_BYTES = 16 * 1024 * 1024


def _operator_token(authorization: str) -> str:
    """The token of ``Authorization: Bearer TOKEN``, or the password of HTTP Basic (what a
    browser asks for; any user name)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


async def _capped_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is declared or read past
    :data:`MAX_BODY_BYTES`: nothing bigger is ever held in memory."""
    too_big = service.Refused(413, f"body over {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(db: HubDatabase, repository: Repository, clock: Callable[[], float] = time.time,
               window_s: float = service.CLOCK_WINDOW_S) -> FastAPI:
    app = FastAPI(title="Triage hub", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(service.Refused)
    async def _refused(request: Request, exc: service.Refused) -> JSONResponse:
        log.warning("refused %s %s: %s", request.method, request.url.path, exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    async def _json_body(request: Request) -> tuple[bytes, dict]:
        body = await _capped_body(request)
        try:
            decoded = json.loads(body)
        except RecursionError:
            raise service.Refused(400, "body is not JSON the hub reads: nested too deeply") from None
        except ValueError as exc:  # not JSON, not UTF-8, or an integer past Python's 4300 digits
            raise service.Refused(400, f"body is not JSON the hub reads: {str(exc)[:120]}") from None
        if not isinstance(decoded, dict):
            raise service.Refused(400, "body must be a JSON object")
        return body, decoded

    async def _signed(request: Request) -> tuple[service.Device, dict]:
        body, decoded = await _json_body(request)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        device = await run_in_threadpool(service.authenticate, db, request.method, path, body,
                                         {k.lower(): v for k, v in request.headers.items()},
                                         clock(), window_s)
        return device, decoded

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/enrol")
    async def enrol(request: Request) -> dict:
        _, body = await _json_body(request)
        device_id, ring = await run_in_threadpool(service.enrol, db, body, clock())
        log.info("enrolled device %s (ring %s)", device_id, ring)
        return {"device_id": device_id, "ring": ring, "root": repository.root_bytes().decode()}

    @app.post("/v1/reports")
    async def reports(request: Request) -> dict:
        device, body = await _signed(request)
        results = await run_in_threadpool(service.take_reports, db, device, body, clock())
        return {"results": results}

    @app.post("/v1/checkin")
    async def checkin(request: Request) -> dict:
        device, body = await _signed(request)
        return await run_in_threadpool(service.check_in, db, device, body, clock())

    @app.post("/v1/audit-anchor")
    async def audit_anchor(request: Request) -> dict:
        device, _ = await _signed(request)
        return await run_in_threadpool(service.audit_anchor, db, device)

    @app.get("/tuf/metadata/{name}")
    def metadata(name: str) -> FileResponse:
        path = repository.metadata_dir / name
        if not _METADATA_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"no metadata {name}")
        return FileResponse(path, media_type="application/json", headers={"Cache-Control": "no-store"})

    @app.get("/tuf/targets/{name}")
    def target(name: str) -> FileResponse:
        path = repository.targets_dir / name
        if not _TARGET_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"no target {name}")
        return FileResponse(path, media_type="application/x-tar")

    @app.get("/fleet", response_class=HTMLResponse)
    def fleet_page(request: Request) -> HTMLResponse:
        if not service.is_operator(db, _operator_token(request.headers.get("authorization", ""))):
            return HTMLResponse("operators only: sign in with an operator token", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="hub operators"'})
        return HTMLResponse(fleet.render(fleet.collect(db, clock())))

    @app.get("/releases", response_class=HTMLResponse)
    def releases_page(request: Request) -> HTMLResponse:
        if not service.is_operator(db, _operator_token(request.headers.get("authorization", ""))):
            return HTMLResponse("operators only: sign in with an operator token", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="hub operators"'})
        found = releases.collect(db)
        rule = releases.Rule()
        return HTMLResponse(releases.render(found, {r.target: releases.evaluate(r, rule) for r in found}, rule))

    return app


"""The web application factory: pages, JSON API, health and metrics on one FastAPI app."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance.errors import ApplianceError
from appliance.parts import Parts
from appliance.states import JobState, ModelState, OutboxState, SeriesState, StudyState
from appliance.web import filters, uploads
from appliance.web.bodies import SmallBodies
from appliance.web.deps import ConnectionPool
from appliance.web.error_pages import back_link, nav_section, status_and_title
from appliance.web.metrics import registry_for
from appliance.web.refusals import RefusalTally
from appliance.web.security import NotSignedIn, Refused, known_host, own_names

HERE = Path(__file__).resolve().parent


def _csp() -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


def templates() -> Jinja2Templates:
    """Jinja2 with autoescape on for every template; nothing from DICOM is marked safe."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    filters.install(env)
    env.globals.update(
        {state.__name__: state for state in (SeriesState, JobState, StudyState, ModelState, OutboxState)}
    )
    return Jinja2Templates(env=env)


def create_app(parts: Parts, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the app from the composition root's parts.

    Parameters
    ----------
    parts : Parts
        The settings (data dir, ``[web]``, DICOM, models) and what is built from them.
    clock : callable, optional
        Wall-clock seconds; tests pass their own to move sessions through their timeouts.

    Routes get what they use as typed dependencies (:mod:`appliance.web.deps`).
    """
    from appliance.web.routes import accounts, admin, api, audit, auth, dicom, drift, health, models, worklist

    settings = parts.settings
    uploads.remove_leftovers(uploads.upload_dir(settings.data_dir))
    app = FastAPI(title="Triage appliance", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.parts = parts
    app.state.pool = pool = ConnectionPool(parts.database)
    app.state.metrics = registry_for(pool.borrow, settings)
    app.state.clock = clock
    app.state.refusals = RefusalTally()
    app.state.templates = templates()

    app.add_middleware(SmallBodies)
    names = own_names(settings.web)

    @app.middleware("http")
    async def refuse_foreign_hosts(request: Request, call_next):
        if not known_host(request.headers.get("host", ""), names):
            return JSONResponse({"error": "unknown Host: add the name to web.allowed_hosts"}, status_code=400)
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = _csp()
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if settings.web.tls.enabled:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith(("/api/", "/metrics")) or "application/json" in request.headers.get(
            "accept", ""
        )

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn):
        if wants_json(request):
            return JSONResponse(
                {"error": "sign in or send a bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return RedirectResponse("/login", status_code=303)

    def error_page(request: Request, title: str, message: str, status: int, principal=None) -> Response:
        href, words = back_link(request.url.path)
        context = {
            "title": title,
            "message": message,
            "principal": principal,
            "back": href,
            "back_words": words,
            "section": nav_section(request.url.path),
        }
        return app.state.templates.TemplateResponse(request, "error.html", context, status_code=status)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        if wants_json(request):
            return JSONResponse({"error": exc.why}, status_code=403)
        return error_page(request, "Not allowed", exc.why, 403)

    @app.exception_handler(ApplianceError)
    async def appliance_error(request: Request, exc: ApplianceError):
        status, title = status_and_title(exc)
        if wants_json(request):
            return JSONResponse({"error": str(exc)}, status_code=status)
        return error_page(request, title, str(exc), status, getattr(request.state, "principal", None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if wants_json(request):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        principal = getattr(request.state, "principal", None)
        return error_page(request, f"{exc.status_code}", str(exc.detail), exc.status_code, principal)

    for module in (auth, health, worklist, api, admin, models, dicom, audit, accounts, drift):
        for router in module.routers():
            app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def route_table(app: FastAPI) -> list[tuple[str, frozenset[str], str]]:
    """Every API route of ``app.routes`` as ``(path, methods, access area)``, routers
    included (FastAPI keeps an included router as one entry that lists its routes)."""
    table = []
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            original = getattr(context, "original_route", context)
            methods = getattr(original, "methods", None)
            if methods is None:
                continue  # the static files mount
            tags = getattr(original, "tags", None) or []
            table.append((getattr(context, "path", ""), frozenset(methods), tags[0] if tags else ""))
    return table

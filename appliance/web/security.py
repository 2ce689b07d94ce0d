"""Who is asking, and may they: sessions and bearer tokens, roles, CSRF and Origin checks.

Every route belongs to exactly one *access area*, declared as the tag of its router:

- ``public``: sign-in page, ``/healthz``, ``/readyz``, static files (no check);
- ``signed-in``: sign-out and the start page (any role);
- ``clinical``: worklist, study pages, feedback, ``/api/studies`` (radiologist, admin);
- ``operations``: models, DICOM, health, audit, ``/metrics``, ``/api/models`` and
  ``/api/audit/verify`` (biomed, admin);
- ``accounts``: users, tokens and sessions (admin).

Every request must name this box in its ``Host`` header (:func:`known_host`). A
state-changing request made with a session cookie must come from our own origin
(``Origin``, else ``Referer``) and carry the session's CSRF token (form field ``csrf`` or
header ``X-CSRF-Token``). Bearer-token requests carry no cookie and need neither.
Every refusal is an audit event; anonymous ones by aggregate (:mod:`appliance.web.refusals`).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from appliance.audit import chain as audit_log
from appliance.config import WebSettings
from appliance.db import transaction
from appliance.web import accounts, sessions
from appliance.web.deps import Connection, Now, SettingsDep

AREAS: dict[str, frozenset[str]] = {
    "public": frozenset(accounts.ROLES),
    "signed-in": frozenset(accounts.ROLES),
    "clinical": frozenset({"radiologist", "admin"}),
    "operations": frozenset({"biomed", "admin"}),
    "accounts": frozenset({"admin"}),
}
SESSION_COOKIE = "appliance_session"
DEVICE_COOKIE = "appliance_device"
LOGIN_CSRF_COOKIE = "appliance_login_csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    """The user or token behind a request."""

    name: str
    role: str
    kind: str  # "session" or "token"
    csrf_token: str = ""
    session_sha256: str = ""

    @property
    def actor(self) -> str:
        return f"web:{self.name}" if self.kind == "session" else f"token:{self.name}"

    def may(self, area: str) -> bool:
        return self.role in AREAS[area]


class NotSignedIn(Exception):
    """No valid session or token: pages redirect to sign-in, the API answers 401."""


class Refused(Exception):
    """Signed in but not allowed (403), or a request that failed the CSRF/Origin check."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def principal_of(request: Request, conn: sqlite3.Connection, web: WebSettings, now: float) -> Principal | None:
    """The session or bearer token of a request, or None (no body is read)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = accounts.token_holder(conn, header[7:].strip())
        return Principal(token.name, token.role, "token") if token else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = sessions.session_for(conn, web, cookie, now)
    if session is None:
        return None
    return Principal(session.user_name, session.role, "session", session.csrf_token, session.token_sha256)


def own_names(web: WebSettings) -> frozenset[str]:
    """The host names this box answers to: localhost, its own names, ``web.allowed_hosts``."""
    names = {"localhost", socket.gethostname(), socket.getfqdn(), *web.allowed_hosts}
    return frozenset(name.lower().rstrip(".") for name in names)


def known_host(host_header: str, names: Collection[str]) -> bool:
    """``Host`` is an IP address or one of ``names`` (pure). A foreign name is refused:
    with DNS rebinding, evil.example resolves to this box and its pages run in the
    browser as evil.example's own."""
    try:
        host = urlsplit("//" + host_header).hostname
    except ValueError:
        return False
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".") in names
    return True


def same_origin(request: Request) -> bool:
    """``Origin`` (or, failing that, ``Referer``) names this server's host and port.

    The scheme is not compared: behind a reverse proxy that terminates TLS the browser's
    origin is https while this server sees http; the ``Host`` it passes through is the same.
    """
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    host = request.headers.get("host", "")
    return bool(host) and hmac.compare_digest(urlsplit(origin).netloc.lower(), host.lower())


async def csrf_token_sent(request: Request) -> str:
    """The CSRF token in the header or, for a form post, in the ``csrf`` field."""
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    kind = request.headers.get("content-type", "")
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf")
        return value if isinstance(value, str) else ""
    return ""


def audit_refusal(conn: sqlite3.Connection, request: Request, principal: Principal | None, why: str) -> None:
    """An audit row for a refused request: each one of a signed-in principal, anonymous
    ones by aggregate (:mod:`appliance.web.refusals`)."""
    address = client_address(request)
    held_back = 0 if principal else request.app.state.refusals.admit(address, why)
    if held_back is None:
        return
    with transaction(conn):
        audit_log.append_in(
            conn,
            "web-refused",
            {
                "user": principal.name if principal else None,
                "role": principal.role if principal else None,
                "method": request.method,
                "path": request.url.path,
                "address": address,
                "why": why,
                "held_back": held_back,
            },
        )


def require(area: str) -> Callable:
    """A router dependency: a signed-in principal allowed in ``area``; CSRF and Origin on
    state-changing session requests. Stores the principal on ``request.state.principal``."""
    allowed = AREAS[area]

    async def dependency(request: Request, conn: Connection, settings: SettingsDep, now: Now) -> Principal:
        principal = principal_of(request, conn, settings.web, now)
        if principal is None:
            raise NotSignedIn()
        if principal.role not in allowed:
            audit_refusal(conn, request, principal, f"role {principal.role} may not use {area}")
            raise Refused(f"your role ({principal.role}) may not open this page")
        if request.method in UNSAFE_METHODS and principal.kind == "session":
            if not same_origin(request):
                audit_refusal(conn, request, principal, "cross-origin request")
                raise Refused("the request did not come from this site")
            sent = await csrf_token_sent(request)
            if not sent or not hmac.compare_digest(sent, principal.csrf_token):
                audit_refusal(conn, request, principal, "missing or wrong CSRF token")
                raise Refused("the form was stale or forged (CSRF token); reload the page and try again")
        request.state.principal = principal
        return principal

    return dependency


def signed_in(request: Request) -> Principal:
    """Who is asking: the principal the route's access area checked (:func:`require`)."""
    return request.state.principal


#: A route's signed-in principal, as a typed dependency.
SignedIn = Annotated[Principal, Depends(signed_in)]

"""Sign in, sign out, and the start page."""

from __future__ import annotations

import hmac
import secrets
import sqlite3

from fastapi import Form, Request
from fastapi.responses import RedirectResponse

from appliance.config import Settings
from appliance.errors import LoginRefused
from appliance.web import accounts, sessions
from appliance.web.deps import Connection, Now, SettingsDep
from appliance.web.routes.common import render, router
from appliance.web.security import (
    DEVICE_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SignedIn,
    audit_refusal,
    client_address,
    same_origin,
)

public = router("public")
signed_in = router("signed-in")


def routers():
    return [public, signed_in]


def _cookie_flags(settings: Settings) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": settings.web.tls.enabled, "path": "/"}


def _login_page(
    request: Request, conn: sqlite3.Connection, settings: Settings, message: str = "", status_code: int = 200
):
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        csrf=token,
        message=message,
        no_users=accounts.count_users(conn) == 0,
        principal=None,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(settings))
    return response


@public.get("/login")
def login_form(request: Request, conn: Connection, settings: SettingsDep):
    return _login_page(request, conn, settings)


@public.post("/login")
def login(
    request: Request,
    conn: Connection,
    settings: SettingsDep,
    now: Now,
    name: str = Form(..., max_length=64),
    password: str = Form(..., max_length=1024),
    csrf: str = Form(""),
):
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not same_origin(request) or not expected or not hmac.compare_digest(csrf, expected):
        audit_refusal(conn, request, None, "sign-in form without a valid CSRF token or from another origin")
        stale = "The sign-in form was stale or came from another site. Please try again."
        return _login_page(request, conn, settings, stale, 403)
    device = request.cookies.get(DEVICE_COOKIE)
    try:
        token, _ = sessions.sign_in(conn, settings.web, name, password, client_address(request), now, device)
    except LoginRefused as exc:
        return _login_page(request, conn, settings, str(exc), 429 if "too many" in str(exc) else 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, **_cookie_flags(settings))
    if new_device := sessions.remember_device(conn, name, device, now):
        response.set_cookie(DEVICE_COOKIE, new_device, max_age=sessions.DEVICE_DAYS * 86400, **_cookie_flags(settings))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@signed_in.post("/logout")
def logout(conn: Connection, principal: SignedIn, now: Now):
    if principal.kind == "session":
        sessions.end(conn, principal.session_sha256, "signed out", now)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@signed_in.get("/")
def start(principal: SignedIn):
    return RedirectResponse("/admin" if principal.may("operations") else "/worklist", status_code=303)

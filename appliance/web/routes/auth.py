"""Sign in, sign out, and the start page."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Form, Request
from fastapi.responses import RedirectResponse

from appliance.errors import LoginRefused
from appliance.web import accounts, sessions
from appliance.web.routes.common import db, render, router
from appliance.web.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    audit_refusal,
    client_address,
    same_origin,
)

public = router("public")
signed_in = router("signed-in")


def routers():
    return [public, signed_in]


def _cookie_flags(request: Request) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": request.app.state.settings.web.tls.enabled, "path": "/"}


def _login_page(request: Request, message: str = "", status_code: int = 200):
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        csrf=token,
        message=message,
        no_users=accounts.count_users(db(request)) == 0,
        principal=None,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(request))
    return response


@public.get("/login")
def login_form(request: Request):
    return _login_page(request)


@public.post("/login")
def login(
    request: Request,
    name: str = Form(..., max_length=64),
    password: str = Form(..., max_length=1024),
    csrf: str = Form(""),
):
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not same_origin(request) or not expected or not hmac.compare_digest(csrf, expected):
        audit_refusal(request, None, "sign-in form without a valid CSRF token or from another origin")
        return _login_page(request, "The sign-in form was stale or came from another site. Please try again.", 403)
    state = request.app.state
    try:
        token, _ = sessions.sign_in(
            db(request), state.settings.web, name, password, client_address(request), state.clock()
        )
    except LoginRefused as exc:
        return _login_page(request, str(exc), 429 if "too many" in str(exc) else 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, **_cookie_flags(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@signed_in.post("/logout")
def logout(request: Request):
    principal: Principal = request.state.principal
    if principal.kind == "session":
        sessions.end(db(request), principal.session_sha256, "signed out", request.app.state.clock())
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@signed_in.get("/")
def start(request: Request):
    principal: Principal = request.state.principal
    return RedirectResponse("/worklist" if principal.may("clinical") else "/admin", status_code=303)

"""Users, tokens and sessions (admin): every change through :mod:`appliance.web.accounts`
and :mod:`appliance.web.sessions`, which audit it."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from appliance.web import accounts, sessions
from appliance.web.deps import Connection, Now, SettingsDep
from appliance.web.routes.common import render, router
from appliance.web.security import SignedIn

accounts_area = router("accounts")


def routers():
    return [accounts_area]


@accounts_area.get("/admin/users")
def users_page(request: Request, conn: Connection, settings: SettingsDep, now: Now, ok: str = ""):
    return _users(request, conn, settings, now, "", ok)


def _users(request: Request, conn: Connection, settings: SettingsDep, now: Now, new_token: str, ok: str):
    """The users page; ``new_token`` only from :func:`create_token`, never from the URL,
    where anyone could put text for the page to present as a token it made."""
    return render(
        request,
        "admin_users.html",
        section="users",
        users=accounts.list_users(conn),
        tokens=accounts.list_tokens(conn),
        roles=accounts.ROLES,
        new_token=new_token,
        ok=ok,
        live=sessions.live_sessions(conn, settings.web, now),
    )


def _done(words: str) -> RedirectResponse:
    return RedirectResponse("/admin/users?" + urlencode({"ok": words}), status_code=303)


@accounts_area.post("/admin/users")
def add_user(
    conn: Connection,
    principal: SignedIn,
    name: str = Form(..., max_length=64),
    role: str = Form(...),
    password: str = Form(..., max_length=1024),
):
    accounts.add_user(conn, name, role, password, principal.actor)
    return _done(f"user {name} added")


@accounts_area.post("/admin/users/{name}/{action}")
def change_user(
    conn: Connection, principal: SignedIn, name: str, action: str, password: str = Form("", max_length=1024)
):
    if action in ("disable", "enable"):
        if action == "disable" and name == principal.name:
            raise HTTPException(400, "you cannot disable yourself")
        accounts.set_disabled(conn, name, action == "disable", principal.actor)
    elif action == "password":
        accounts.reset_password(conn, name, password, principal.actor)
    else:
        raise HTTPException(404, "no such action")
    return _done(f"user {name}: {action} done")


@accounts_area.post("/admin/tokens")
def create_token(
    request: Request,
    conn: Connection,
    settings: SettingsDep,
    now: Now,
    principal: SignedIn,
    role: str = Form(...),
    name: str = Form(..., max_length=64),
):
    token = accounts.create_token(conn, role, name, principal.actor)
    # Shown once, on the page this redirect-free response renders; never stored in clear.
    return _users(request, conn, settings, now, token, f"token {name} created; copy it now, it is not shown again")


@accounts_area.post("/admin/tokens/{token_id}/revoke")
def revoke_token(conn: Connection, principal: SignedIn, token_id: int):
    accounts.revoke_token(conn, token_id, principal.actor)
    return _done(f"token {token_id} revoked")


@accounts_area.post("/admin/sessions/end")
def end_session(conn: Connection, principal: SignedIn, now: Now, session: str = Form(..., max_length=64)):
    sessions.end(conn, session, f"ended by {principal.actor}", now)
    return _done("session ended")

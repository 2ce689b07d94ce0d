"""The biomed and admin pages: health, models, DICOM, audit; users, tokens and sessions.

Every change goes through the functions the CLI uses (``ModelRegistry``, ``accounts``,
``sessions``) and is audited by them; model changes need a confirmation page first.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from appliance.audit import chain as audit_log
from appliance.audit.chain import verify_database
from appliance.audit.export import export
from appliance.db import transaction
from appliance.models.registry import ModelRegistry
from appliance.send.outbox import Outbox, lane_states
from appliance.states import ModelState
from appliance.triage.pipeline import golden_series_inputs
from appliance.web import accounts, dicom_endpoints, feedback, health_stats, model_stats, sessions
from appliance.web.routes.common import db, render, router
from appliance.web.routes.health import readiness
from appliance.web.routes.worklist import day_start

operations = router("operations")
accounts_area = router("accounts")
MODEL_ACTIONS = {
    "shadow": "Run this version in shadow: it sees every routed series beside the active model; its results "
    "are audited and compared, never shown to radiologists or sent to PACS.",
    "activate": "Make this version the active model: golden-tested on every backend here first; the current "
    "active version is retired. New results are shown and sent from this version on.",
    "rollback": "Retire the active version and activate the newest earlier version again (golden-tested first).",
}


DEAD_SHOWN = 100  # newest dead letters listed per destination


def routers():
    return [operations, accounts_area]


def registry(request: Request) -> ModelRegistry:
    settings = request.app.state.settings
    return ModelRegistry(
        request.app.state.database(),
        settings.models_dir,
        list(settings.models.trusted_keys),
        settings.models.pin_backend,
        golden_series_inputs,
    )


def _memory() -> dict[str, int]:
    info = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return info


@operations.get("/admin")
def health_page(request: Request):
    conn = db(request)
    settings = request.app.state.settings
    now = request.app.state.clock()
    disk = shutil.disk_usage(settings.data_dir) if settings.data_dir.exists() else None
    jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    outbox = conn.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state").fetchall()
    return render(
        request,
        "admin_health.html",
        section="health",
        disk=disk,
        floor_bytes=settings.dicom.min_free_disk_mb * 1024 * 1024,
        load=os.getloadavg(),
        cpus=os.cpu_count(),
        memory=_memory(),
        jobs=jobs,
        oldest=health_stats.oldest_pending(conn, now),
        windows=health_stats.windows(conn, now),
        outbox=outbox,
        checks=readiness(request),
        now=now,
        result_alerts=Outbox(request.app.state.database()).alerts(),
    )


@operations.get("/admin/models")
def models_page(request: Request):
    conn = db(request)
    ppv = feedback.local_ppv(conn)
    models = registry(request).models()
    budgets = [
        model_stats.alert_budget(conn, m.id, m.manifest.operating_point.threshold, request.app.state.clock())
        for m in models
        if m.state == ModelState.ACTIVE
    ]
    return render(
        request,
        "admin_models.html",
        section="models",
        models=models,
        ppv=ppv,
        budgets=budgets,
        agreement=model_stats.shadow_agreement(conn),
        max_upload_mb=request.app.state.settings.web.max_upload_mb,
        trusted_keys=request.app.state.settings.models.trusted_keys,
    )


@operations.get("/admin/models/confirm")
def confirm_model_action(request: Request, action: str, model_id: str, version: str = ""):
    if action not in MODEL_ACTIONS:
        raise HTTPException(400, f"action: {action!r} is not one of {', '.join(MODEL_ACTIONS)}")
    models = [m for m in registry(request).models() if m.id == model_id]
    if not models:
        raise HTTPException(404, f"model_id: no model {model_id!r} is installed")
    active = next((m for m in models if m.state == ModelState.ACTIVE), None)
    return render(
        request,
        "admin_confirm.html",
        section="models",
        action=action,
        model_id=model_id,
        version=version,
        explanation=MODEL_ACTIONS[action],
        active=active,
    )


@operations.post("/admin/models/change")
async def change_model(
    request: Request,
    action: str = Form(...),
    model_id: str = Form(...),
    version: str = Form(""),
    confirm: str = Form(""),
):
    if confirm != "yes":
        raise HTTPException(400, "confirm: the change was not confirmed")
    if action not in MODEL_ACTIONS:
        raise HTTPException(400, f"action: {action!r} is not one of {', '.join(MODEL_ACTIONS)}")
    models = registry(request)
    actor = request.state.principal.actor
    if action == "rollback":
        model = await run_in_threadpool(models.rollback, model_id, actor)
    else:
        model = await run_in_threadpool(getattr(models, action), model_id, version, actor)
    query = urlencode({"ok": f"{model.label} is {model.state} on {(model.selection or {}).get('chosen', '-')}"})
    return RedirectResponse(f"/admin/models?{query}", status_code=303)


@operations.get("/admin/dicom")
def dicom_page(request: Request):
    running = request.app.state.settings
    pending = dicom_endpoints.saved(running)
    conn = db(request)
    counts: dict[str, dict[str, int]] = {}
    for destination, state, n in conn.execute(
        "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
    ):
        counts.setdefault(destination, {})[state] = n
    saved_keys = [d.text for d in pending.dicom.destinations]
    keys = saved_keys + [
        k for k in [d.text for d in running.dicom.destinations] + sorted(counts) if k not in saved_keys
    ]
    keys = list(dict.fromkeys(keys))
    dead = Outbox(request.app.state.database()).dead_letters()
    queues = [
        DestinationQueue.of(
            key, running, pending, counts.get(key, {}), [d for d in dead if d.destination == key][-DEAD_SHOWN:]
        )
        for key in keys
    ]
    return render(
        request,
        "admin_dicom.html",
        section="dicom",
        dicom=running.dicom,
        peers=_endpoint_rows(running.dicom.peers, pending.dicom.peers),
        queues=queues,
        lanes=lane_states(conn),
        now=request.app.state.clock(),
        result_alerts=[d for d in dead if d.alert],
        restart_needed=_endpoint_rows(running.dicom.peers, pending.dicom.peers, changed_only=True)
        or any(q.change in ("added", "removed") for q in queues),
    )


def _endpoint_rows(running: tuple, saved: tuple, changed_only: bool = False) -> list[tuple[str, str]]:
    """``(text, change)`` for every entry running or saved; change is '', 'added' or 'removed'."""
    now_texts, saved_texts = [e.text for e in running], [e.text for e in saved]
    rows = [(t, "" if t in now_texts else "added") for t in saved_texts]
    rows += [(t, "removed") for t in now_texts if t not in saved_texts]
    return [r for r in rows if r[1]] if changed_only else rows


@dataclass(frozen=True)
class DestinationQueue:
    """One destination's row on the DICOM page: its queue, dead letters and whether a
    restart still has to add it to (or take it from) the sender."""

    key: str
    change: str  # '', 'added' (saved, sender starts it at restart), 'removed', 'unconfigured'
    counts: dict
    dead: list

    @classmethod
    def of(cls, key: str, running, saved, counts: dict, dead: list) -> DestinationQueue:
        in_running = key in {d.text for d in running.dicom.destinations}
        in_saved = key in {d.text for d in saved.dicom.destinations}
        change = "" if in_running and in_saved else "added" if in_saved else "removed" if in_running else "unconfigured"
        return cls(key, change, counts, dead)


@operations.post("/admin/dicom/{kind}/{action}")
def change_endpoint(request: Request, kind: str, action: str, entry: str = Form(..., max_length=200)):
    if kind not in dicom_endpoints.FIELD or action not in ("add", "remove"):
        raise HTTPException(404, "no such change")
    done = dicom_endpoints.change(
        db(request), request.app.state.settings, kind, action, entry, request.state.principal.actor
    )
    words = (
        f"{dicom_endpoints.FIELD[kind]} {done} {'added' if action == 'add' else 'removed'}; "
        "the listener and the sender use it after the appliance service restarts"
    )
    return RedirectResponse("/admin/dicom?" + urlencode({"ok": words}), status_code=303)


@operations.post("/admin/dicom/outbox/{item_id}/{action}")
def change_dead_letter(request: Request, item_id: int, action: str):
    outbox = Outbox(request.app.state.database())
    actor = request.state.principal.actor
    if action == "retry":
        done = outbox.retry(item_id, actor, now=request.app.state.clock())
    elif action == "discard":
        done = outbox.discard(item_id, actor)
    else:
        raise HTTPException(404, "no such action")
    if not done:
        raise HTTPException(404, f"outbox {item_id} is not a dead letter (already retried or discarded?)")
    words = f"object {item_id} {'queued again' if action == 'retry' else 'discarded'}"
    return RedirectResponse("/admin/dicom?" + urlencode({"ok": words}), status_code=303)


@operations.post("/admin/dicom/echo")
async def echo_destination(request: Request, destination: str = Form(..., max_length=200)):
    from appliance.send.echo import echo

    settings = dicom_endpoints.saved(request.app.state.settings)  # a new destination can be checked at once
    target = next((d for d in settings.dicom.destinations if d.text == destination), None)
    if target is None:
        raise HTTPException(404, f"destination: {destination!r} is not configured")
    result = await run_in_threadpool(echo, settings.dicom.ae_title, target, settings.sender)
    conn = db(request)
    with transaction(conn):
        audit_log.append_in(
            conn,
            "dicom-echo",
            {
                "destination": destination,
                "ok": result.ok,
                "result": result.message,
                "actor": request.state.principal.actor,
            },
        )
    words = f"{destination}: {result.message}"
    return RedirectResponse("/admin/dicom?" + urlencode({"ok" if result.ok else "error": words}), status_code=303)


@operations.get("/admin/audit")
def audit_page(
    request: Request,
    kind: str = "",
    study: str = "",
    since: str = "",
    until: str = "",
    verify: int = 0,
    page: int = Query(1, ge=1),
):
    conn = db(request)
    where, params = _audit_filter(kind, study, since, until)
    total = conn.execute(f"SELECT COUNT(*) FROM audit_log{where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT seq, at, kind, payload FROM audit_log{where} ORDER BY seq DESC LIMIT 100 OFFSET ?",
        [*params, (page - 1) * 100],
    ).fetchall()
    kinds = [k for (k,) in conn.execute("SELECT DISTINCT kind FROM audit_log ORDER BY kind")]
    problems = verify_database(request.app.state.database()) if verify else None
    query = {k: v for k, v in (("kind", kind), ("study", study), ("since", since), ("until", until)) if v}
    return render(
        request,
        "admin_audit.html",
        section="audit",
        rows=rows,
        total=total,
        kinds=kinds,
        kind=kind,
        study=study,
        since=since,
        until=until,
        problems=problems,
        page=page,
        pages=max((total + 99) // 100, 1),
        query=query,
        export_query=urlencode(query),
        page_url=lambda n: "/admin/audit?" + urlencode({**query, "page": n}),
    )


def _audit_filter(kind: str, study: str, since: str, until: str) -> tuple[str, list]:
    import datetime as dt

    clauses, params = [], []
    if kind:
        clauses.append("kind = ?")
        params.append(kind)
    if study:
        clauses.append("instr(payload, ?) > 0")
        params.append(study.strip())
    for text, op, field, shift in ((since, ">=", "since", 0), (until, "<", "until", 86400)):
        if text:
            moment = dt.datetime.fromtimestamp(day_start(text, field) + shift, dt.UTC)
            clauses.append(f"at {op} ?")
            params.append(moment.isoformat(timespec="microseconds"))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@operations.get("/admin/audit/export")
def audit_export(request: Request, format: str = "csv", kind: str = ""):
    if format not in ("csv", "json"):
        raise HTTPException(400, f"format: {format!r} is not csv or json")
    conn = db(request)
    with transaction(conn):
        audit_log.append_in(
            conn, "web-audit-exported", {"format": format, "kind": kind or None, "actor": request.state.principal.actor}
        )
    out = io.StringIO()
    export(request.app.state.database(), out, format, kind or None)
    return Response(
        out.getvalue(),
        media_type="text/csv" if format == "csv" else "application/json",
        headers={"Content-Disposition": f'attachment; filename="audit.{format}"'},
    )


# Users, tokens, sessions (admin) ------------------------------------------------------
@accounts_area.get("/admin/users")
def users_page(request: Request, token: str = "", ok: str = ""):
    conn = db(request)
    settings = request.app.state.settings
    return render(
        request,
        "admin_users.html",
        section="users",
        users=accounts.list_users(conn),
        tokens=accounts.list_tokens(conn),
        roles=accounts.ROLES,
        new_token=token,
        ok=ok,
        live=sessions.live_sessions(conn, settings.web, request.app.state.clock()),
    )


@accounts_area.post("/admin/users")
def add_user(
    request: Request,
    name: str = Form(..., max_length=64),
    role: str = Form(...),
    password: str = Form(..., max_length=1024),
):
    accounts.add_user(db(request), name, role, password, request.state.principal.actor)
    return RedirectResponse("/admin/users?" + urlencode({"ok": f"user {name} added"}), status_code=303)


@accounts_area.post("/admin/users/{name}/{action}")
def change_user(request: Request, name: str, action: str, password: str = Form("", max_length=1024)):
    actor = request.state.principal.actor
    if action in ("disable", "enable"):
        if action == "disable" and name == request.state.principal.name:
            raise HTTPException(400, "you cannot disable yourself")
        accounts.set_disabled(db(request), name, action == "disable", actor)
    elif action == "password":
        accounts.reset_password(db(request), name, password, actor)
    else:
        raise HTTPException(404, "no such action")
    return RedirectResponse("/admin/users?" + urlencode({"ok": f"user {name}: {action} done"}), status_code=303)


@accounts_area.post("/admin/tokens")
def create_token(request: Request, role: str = Form(...), name: str = Form(..., max_length=64)):
    token = accounts.create_token(db(request), role, name, request.state.principal.actor)
    # Shown once, on the page this redirect-free response renders; never stored in clear.
    return users_page(request, token=token, ok=f"token {name} created; copy it now, it is not shown again")


@accounts_area.post("/admin/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: int):
    accounts.revoke_token(db(request), token_id, request.state.principal.actor)
    return RedirectResponse("/admin/users?" + urlencode({"ok": f"token {token_id} revoked"}), status_code=303)


@accounts_area.post("/admin/sessions/end")
def end_session(request: Request, session: str = Form(..., max_length=64)):
    sessions.end(db(request), session, f"ended by {request.state.principal.actor}", request.app.state.clock())
    return RedirectResponse("/admin/users?" + urlencode({"ok": "session ended"}), status_code=303)

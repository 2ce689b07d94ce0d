"""The models pages (biomed, admin): installed versions, their figures on this box, and
shadow, activate, rollback behind a confirmation page (through :class:`ModelRegistry`,
which golden-tests and audits every change)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from appliance.errors import ModelConflict
from appliance.states import ModelState
from appliance.sync import withdrawals
from appliance.web import feedback, model_stats
from appliance.web.deps import Connection, Now, Registry, SettingsDep
from appliance.web.routes.common import render, router
from appliance.web.security import SignedIn

operations = router("operations")
MODEL_ACTIONS = {
    "shadow": "Run this version in shadow: it sees every routed series beside the active model; its results "
    "are audited and compared, never shown to radiologists or sent to PACS.",
    "activate": "Make this version the active model: golden-tested on every backend here first; the current "
    "active version is retired. New results are shown and sent from this version on.",
    "rollback": "Retire the active version and activate the newest earlier version again (golden-tested first); "
    "new results are shown and sent from that version on.",
}


def routers():
    return [operations]


@operations.get("/admin/models")
def models_page(request: Request, conn: Connection, models: Registry, settings: SettingsDep, now: Now):
    installed = models.models()
    budgets = [
        model_stats.alert_budget(conn, m.id, m.manifest.operating_point.threshold, now)
        for m in installed
        if m.state == ModelState.ACTIVE
    ]
    active = {(m.id, m.version) for m in installed if m.state == ModelState.ACTIVE}
    return render(
        request,
        "admin_models.html",
        section="models",
        models=installed,
        withdrawn=[w for w in withdrawals.listed(conn) if (w["model_id"], w["version"]) in active],
        ppv=feedback.local_ppv(conn),
        budgets=budgets,
        agreement=model_stats.shadow_agreement(conn),
        rollback_to={m.id: models.rollback_target(m.id) for m in installed},
        max_upload_mb=settings.web.max_upload_mb,
        trusted_keys=settings.models.trusted_keys,
    )


@operations.get("/admin/models/confirm")
def confirm_model_action(request: Request, models: Registry, action: str, model_id: str, version: str = ""):
    if action not in MODEL_ACTIONS:
        raise HTTPException(400, f"action: {action!r} is not one of {', '.join(MODEL_ACTIONS)}")
    versions = [m for m in models.models() if m.id == model_id]
    if not versions:
        raise HTTPException(404, f"model_id: no model {model_id!r} is installed")
    target = models.rollback_target(model_id) if action == "rollback" else None
    if action == "rollback" and target is None:
        raise ModelConflict(f"{model_id} has no earlier version installed: there is nothing to roll back to")
    return render(
        request,
        "admin_confirm.html",
        section="models",
        action=action,
        model_id=model_id,
        version=version,
        explanation=MODEL_ACTIONS[action],
        active=next((m for m in versions if m.state == ModelState.ACTIVE), None),
        target=target,
    )


@operations.post("/admin/models/change")
async def change_model(
    models: Registry,
    principal: SignedIn,
    action: str = Form(...),
    model_id: str = Form(...),
    version: str = Form(""),
    confirm: str = Form(""),
):
    if confirm != "yes":
        raise HTTPException(400, "confirm: the change was not confirmed")
    if action not in MODEL_ACTIONS:
        raise HTTPException(400, f"action: {action!r} is not one of {', '.join(MODEL_ACTIONS)}")
    if action == "rollback":
        model = await run_in_threadpool(models.rollback, model_id, principal.actor)
    else:
        model = await run_in_threadpool(getattr(models, action), model_id, version, principal.actor)
    query = urlencode({"ok": f"{model.label} is {model.state} on {(model.selection or {}).get('chosen', '-')}"})
    return RedirectResponse(f"/admin/models?{query}", status_code=303)

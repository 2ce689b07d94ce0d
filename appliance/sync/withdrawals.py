"""What the hub's check-in answer asks of the box: follow a ring the operator moved it to,
and act on withdrawn releases. The only writer of ``sync_withdrawals``.

A withdrawn release that runs here in shadow (or is only installed) is retired at once,
audited (:meth:`appliance.models.registry.ModelRegistry.withdraw`). One that is active
stays active: activation is a person's decision, so the box only says so, on ``appliance
sync status`` (``withdrawn``) and the admin models page, until someone activates another
version or rolls back.
"""

from __future__ import annotations

import sqlite3
import time

from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.errors import PackageError
from appliance.models.registry import ModelRegistry
from appliance.states import ModelState
from appliance.sync.identity import Enrolment

#: The rings a hub may name (training.hub.repository.RINGS).
RINGS = ("pilot", "all")
ACTOR = "hub withdrawal"


def follow_ring(conn: sqlite3.Connection, data_dir, enrolment: Enrolment, ring: object) -> Enrolment:
    """Take the ring the hub now names for this box (audited); anything else is ignored."""
    if not isinstance(ring, str) or ring not in RINGS or ring == enrolment.ring:
        return enrolment
    moved = Enrolment(enrolment.hub_url, enrolment.device_id, ring)
    moved.save_ring(data_dir)
    with transaction(conn):
        audit_log.append_in(conn, "sync-ring-changed", {"from": enrolment.ring, "to": ring})
    return moved


def apply(conn: sqlite3.Connection, registry: ModelRegistry, withdrawn: object, now: float | None = None) -> list[str]:
    """Act on the hub's list of withdrawn releases ``[{model_id, version}]``; return the
    labels of the versions dropped from shadow now."""
    now = time.time() if now is None else now
    dropped = []
    items = withdrawn if isinstance(withdrawn, list) else []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("model_id"), str):
            continue
        model_id, version = item["model_id"], item.get("version")
        if not isinstance(version, str):
            continue
        try:
            model = registry.get(model_id, version)
        except PackageError:
            continue  # not installed here: nothing to do
        if conn.execute(
            "SELECT 1 FROM sync_withdrawals WHERE model_id = ? AND version = ?", (model_id, version)
        ).fetchone():
            continue
        state_then = model.state
        if state_then in (ModelState.SHADOW, ModelState.INSTALLED):
            registry.withdraw(model_id, version, ACTOR)
            dropped.append(model.label)
        with transaction(conn):
            conn.execute(
                "INSERT OR IGNORE INTO sync_withdrawals (model_id, version, state_then, told_at) VALUES (?,?,?,?)",
                (model_id, version, state_then, now),
            )
            audit_log.append_in(
                conn, "release-withdrawn", {"model_id": model_id, "version": version, "state_then": state_then}
            )
    return dropped


def listed(conn: sqlite3.Connection) -> list[dict]:
    """The withdrawals this box was told of, newest first, each with what it means here."""
    out = []
    for model_id, version, state_then, told_at in conn.execute(
        "SELECT model_id, version, state_then, told_at FROM sync_withdrawals ORDER BY told_at DESC"
    ):
        if state_then == ModelState.ACTIVE:
            says = (
                f"{model_id} {version} was withdrawn by the hub and is still active here: "
                "activate another version or roll back (a person's decision)"
            )
        else:
            says = f"{model_id} {version} was withdrawn by the hub and no longer runs here (it was {state_then})"
        out.append(
            {"model_id": model_id, "version": version, "state_then": state_then, "told_at": told_at, "says": says}
        )
    return out

"""The DICOM page (biomed, admin): peers and destinations (changes kept beside the data,
applied at the next start), each destination's queue, breaker and dead letters, C-ECHO."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from appliance.audit import chain as audit_log
from appliance.config import Settings
from appliance.db import transaction
from appliance.send.outbox import Outbox, lane_states
from appliance.web import dicom_endpoints
from appliance.web.deps import Database, Now, SettingsDep
from appliance.web.routes.common import render, router
from appliance.web.security import SignedIn

operations = router("operations")
DEAD_SHOWN = 100  # newest dead letters listed per destination
OPPOSITE = {"add": "remove", "remove": "add"}


def routers():
    return [operations]


@operations.get("/admin/dicom")
def dicom_page(request: Request, db: Database, running: SettingsDep, now: Now):
    pending = dicom_endpoints.saved(running)
    counts: dict[str, dict[str, int]] = {}
    for destination, state, n in db.conn.execute(
        "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
    ):
        counts.setdefault(destination, {})[state] = n
    saved_keys = [d.text for d in pending.dicom.destinations]
    keys = saved_keys + [
        k for k in [d.text for d in running.dicom.destinations] + sorted(counts) if k not in saved_keys
    ]
    keys = list(dict.fromkeys(keys))
    dead = Outbox(db).dead_letters()
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
        lanes=lane_states(db.conn),
        now=now,
        result_alerts=[d for d in dead if d.alert],
        restart_needed=_endpoint_rows(running.dicom.peers, pending.dicom.peers, changed_only=True)
        or any(q.change in ("added", "removed") for q in queues),
        undo=_undo(request.query_params),
    )


def _undo(query) -> dict | None:
    """The change that undoes the one just made (from the page's query), or None."""
    kind, did, entry = query.get("kind", ""), query.get("did", ""), query.get("entry", "")
    if kind not in dicom_endpoints.FIELD or did not in OPPOSITE or not entry:
        return None
    action = OPPOSITE[did]
    words = f"Undo: {'put' if action == 'add' else 'take'} {entry} {'back' if action == 'add' else 'out again'}"
    return {"url": f"/admin/dicom/{kind}/{action}", "entry": entry, "words": words}


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
    def of(cls, key: str, running: Settings, saved: Settings, counts: dict, dead: list) -> DestinationQueue:
        in_running = key in {d.text for d in running.dicom.destinations}
        in_saved = key in {d.text for d in saved.dicom.destinations}
        change = "" if in_running and in_saved else "added" if in_saved else "removed" if in_running else "unconfigured"
        return cls(key, change, counts, dead)


@operations.post("/admin/dicom/{kind}/{action}")
def change_endpoint(
    db: Database,
    settings: SettingsDep,
    principal: SignedIn,
    kind: str,
    action: str,
    entry: str = Form(..., max_length=200),
):
    if kind not in dicom_endpoints.FIELD or action not in ("add", "remove"):
        raise HTTPException(404, "no such change")
    done = dicom_endpoints.change(db.conn, settings, kind, action, entry, principal.actor)
    words = (
        f"{dicom_endpoints.FIELD[kind]} {done} {'added' if action == 'add' else 'removed'}; "
        "the listener and the sender use it after the appliance service restarts"
    )
    query = urlencode({"ok": words, "kind": kind, "did": action, "entry": done})
    return RedirectResponse("/admin/dicom?" + query, status_code=303)


@operations.post("/admin/dicom/outbox/{item_id}/{action}")
def change_dead_letter(db: Database, principal: SignedIn, now: Now, item_id: int, action: str):
    outbox = Outbox(db)
    if action == "retry":
        done = outbox.retry(item_id, principal.actor, now=now)
    elif action == "discard":
        done = outbox.discard(item_id, principal.actor)
    else:
        raise HTTPException(404, "no such action")
    if not done:
        raise HTTPException(404, f"outbox {item_id} is not a dead letter (already retried or discarded?)")
    words = f"object {item_id} {'queued again' if action == 'retry' else 'discarded'}"
    return RedirectResponse("/admin/dicom?" + urlencode({"ok": words}), status_code=303)


@operations.post("/admin/dicom/echo")
async def echo_destination(
    db: Database, running: SettingsDep, principal: SignedIn, destination: str = Form(..., max_length=200)
):
    from appliance.send.echo import echo

    settings = dicom_endpoints.saved(running)  # a new destination can be checked at once
    target = next((d for d in settings.dicom.destinations if d.text == destination), None)
    if target is None:
        raise HTTPException(404, f"destination: {destination!r} is not configured")
    result = await run_in_threadpool(echo, settings.dicom.ae_title, target, settings.sender)
    with transaction(db.conn) as conn:
        audit_log.append_in(
            conn,
            "dicom-echo",
            {"destination": destination, "ok": result.ok, "result": result.message, "actor": principal.actor},
        )
    words = f"{destination}: {result.message}"
    return RedirectResponse("/admin/dicom?" + urlencode({"ok" if result.ok else "error": words}), status_code=303)

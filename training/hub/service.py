"""What the hub does with each request: tokens, enrolment, request signatures, report
intake and check-ins. HTTP lives in :mod:`training.hub.app`; this module only talks to
the database, with the clock passed in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import uuid
from dataclasses import dataclass

from appliance.drift.features import FEATURE_NAMES
from appliance.drift.schema import LABEL_RE, check_report
from appliance.errors import ReportError
from appliance.sync import signing
from training.hub import audit, categories
from training.hub.repository import RINGS
from training.hub.store import HubDatabase

log = logging.getLogger("training.hub.service")

#: A signed request's timestamp may differ from the hub's clock by at most this much.
CLOCK_WINDOW_S = 300
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.,'()-]{0,63}$")
MAX_REPORTS_PER_REQUEST = 200
MAX_DRIFT_ALERTS = 200
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$")


class Refused(Exception):
    """A request the hub will not serve; ``status`` is the HTTP status, the message why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: HubDatabase, site: str, ring: str, ttl_s: float, now: float) -> str:
    """A new one-time enrolment token (only its hash is stored)."""
    if ring not in RINGS:
        raise ValueError(f"ring {ring!r}: must be one of {', '.join(RINGS)}")
    if not _SITE.match(site):
        raise ValueError(f"site {site!r}: 1-64 letters, digits, spaces or _.,'()-")
    token = secrets.token_hex(24)  # hex: never starts with "-", which a command line reads as an option
    db.execute("INSERT INTO tokens (token_hash, site, ring, created_at, expires_at) VALUES (?,?,?,?,?)",
               (_token_hash(token), site, ring, now, now + ttl_s))
    return token


def create_operator_token(db: HubDatabase, name: str, now: float) -> str:
    """A new token for an operator of the fleet page (only its hash is stored)."""
    if not _SITE.match(name):
        raise ValueError(f"name {name!r}: 1-64 letters, digits, spaces or _.,'()-")
    token = secrets.token_hex(24)  # hex: never starts with "-", which a command line reads as an option
    db.execute("INSERT INTO operator_tokens (token_hash, name, created_at) VALUES (?,?,?)",
               (_token_hash(token), name, now))
    return token


def is_operator(db: HubDatabase, token: str) -> bool:
    return db.one("SELECT 1 FROM operator_tokens WHERE token_hash = ?", (_token_hash(token),)) is not None


def enrol(db: HubDatabase, body: dict, now: float) -> tuple[str, str]:
    """Spend a token and pin the box's public key to a new device id.

    Returns
    -------
    (device_id, ring)
    """
    token, key_b64, proof = body.get("token"), body.get("public_key"), body.get("signature")
    if not all(isinstance(v, str) for v in (token, key_b64, proof)):
        raise Refused(400, "enrolment needs token, public_key and signature (strings)")
    try:
        public_key = base64.b64decode(key_b64, validate=True)
    except ValueError:
        raise Refused(400, "public_key: not base64") from None
    if len(public_key) != 32:
        raise Refused(400, "public_key: must be a raw 32-byte ed25519 key")
    if not signing.verify(public_key, signing.enrolment_string(token, public_key), proof):
        raise Refused(400, "signature: does not prove possession of public_key")
    device_id = uuid.uuid4().hex
    with db.transaction():
        row = db.one("SELECT site, ring, expires_at, used_at FROM tokens WHERE token_hash = ?",
                     (_token_hash(token),))
        if row is None:
            raise Refused(403, "enrolment token is not valid")
        site, ring, expires_at, used_at = row
        if used_at is not None:
            raise Refused(403, "enrolment token was already used")
        if expires_at < now:
            raise Refused(403, "enrolment token has expired")
        if db.one("SELECT device_id FROM devices WHERE public_key = ?", (key_b64,)):
            raise Refused(409, "public_key: already enrolled as another device")
        db.execute("UPDATE tokens SET used_at = ?, device_id = ? WHERE token_hash = ? AND used_at IS NULL",
                   (now, device_id, _token_hash(token)))
        version = body.get("appliance_version")
        db.execute("INSERT INTO devices (device_id, public_key, site, ring, enrolled_at, appliance_version) "
                   "VALUES (?,?,?,?,?,?)", (device_id, key_b64, site, ring, now,
                                            version[:64] if isinstance(version, str) else None))
    return device_id, ring


@dataclass(frozen=True)
class Device:
    device_id: str
    site: str
    ring: str


def revoke_device(db: HubDatabase, device_id: str) -> bool:
    """Forget a device's pinned key (lost or stolen box): its later requests are refused,
    its reports stay. False when there is no such device."""
    return bool(db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)))


def authenticate(db: HubDatabase, method: str, path: str, body: bytes, headers: dict[str, str],
                 now: float, window_s: float = CLOCK_WINDOW_S) -> Device:
    """Check a box's request signature; record its nonce so it can never be replayed."""
    device_id = headers.get("x-device-id", "")
    timestamp, nonce = headers.get("x-timestamp", ""), headers.get("x-nonce", "")
    signature = headers.get("x-signature", "")
    if not (device_id and timestamp and nonce and signature):
        raise Refused(401, "request is not signed (X-Device-Id, X-Timestamp, X-Nonce, X-Signature)")
    if not timestamp.isdigit():
        raise Refused(401, "X-Timestamp: must be whole seconds since the epoch")
    if abs(now - int(timestamp)) > window_s:
        raise Refused(401, f"X-Timestamp: outside the {window_s:.0f} s window of the hub's clock")
    if not _NONCE.match(nonce):
        raise Refused(401, "X-Nonce: must be 32 lowercase hex digits")
    row = db.one("SELECT public_key, site, ring FROM devices WHERE device_id = ?", (device_id,))
    if row is None:
        raise Refused(401, "X-Device-Id: unknown device")
    public_key, site, ring = row
    message = signing.signing_string(method, path, body, int(timestamp), nonce, device_id)
    if not signing.verify(base64.b64decode(public_key), message, signature):
        raise Refused(401, "X-Signature: does not verify against the device's pinned key")
    with db.transaction():
        db.execute("DELETE FROM nonces WHERE seen_at < ?", (now - 2 * window_s,))
        fresh = db.execute("INSERT INTO nonces (device_id, nonce, seen_at) VALUES (?,?,?) "
                           "ON CONFLICT (device_id, nonce) DO NOTHING", (device_id, nonce, now))
    if not fresh:
        raise Refused(401, "X-Nonce: already seen; the request is a replay")
    return Device(device_id, site, ring)


def _check_head(head: object) -> tuple[int, str]:
    if not isinstance(head, dict) or set(head) != {"seq", "hash"}:
        raise ReportError("audit_head: must be {seq, hash}")
    seq, digest = head["seq"], head["hash"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ReportError("audit_head.seq: must be an integer >= 0")
    if not isinstance(digest, str) or not _HASH.match(digest):
        raise ReportError("audit_head.hash: must be 64 lowercase hex digits")
    return seq, digest


def take_reports(db: HubDatabase, device: Device, body: dict, now: float) -> list[dict]:
    """Store each report once (by its device and report id), in order, in one transaction.

    Returns one result per item: ``accepted``, ``duplicate`` (already held; the box may
    forget it) or ``rejected`` with the reason naming the field. Category labels not on
    the allow-list are never stored (:func:`training.hub.categories.screen`); an accepted
    item says how many were ``withheld``.
    """
    items = body.get("reports")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_REPORTS_PER_REQUEST:
        raise Refused(400, f"reports: must be a list of 1..{MAX_REPORTS_PER_REQUEST} items")
    results = []
    with db.transaction():
        allow_list = categories.allowed(db)
        for index, item in enumerate(items):
            report = item.get("report") if isinstance(item, dict) else None
            report_id = report.get("report_id") if isinstance(report, dict) else None
            try:
                if not isinstance(item, dict) or set(item) != {"report", "audit_head"}:
                    raise ReportError(f"reports[{index}]: must be {{report, audit_head}}")
                seq, digest = _check_head(item["audit_head"])
                check_report(report)
            except ReportError as exc:
                results.append({"report_id": report_id, "status": "rejected", "reason": str(exc)})
                continue
            report, withheld = categories.screen(report, allow_list)
            inserted = db.execute(
                "INSERT INTO reports (report_id, device_id, day, received_at, audit_seq, audit_hash, body) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (device_id, report_id) DO NOTHING",
                (report_id, device.device_id, report["day"], now, seq, digest,
                 json.dumps(report, sort_keys=True)))
            if not inserted:
                results.append({"report_id": report_id, "status": "duplicate"})
                continue
            for model in report["models"]:
                db.execute(
                    "INSERT INTO report_models (report_id, device_id, day, model_id, model_version, series, "
                    "flagged, not_analysed, features) VALUES (?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (device_id, report_id, model_id, model_version) DO NOTHING",
                    (report_id, device.device_id, report["day"], model["model_id"], model["model_version"],
                     model["series"], model["flagged"],
                     sum(v for v in model["not_analysed"].values() if v is not None),
                     json.dumps(model["features"], sort_keys=True)))
            for model in report["models"]:
                for role, stats in model.get("field", {}).items():
                    _store_field(db, device, report, model, role, stats)
            _note_report_anchor(db, device.device_id, seq, digest)
            results.append({"report_id": report_id, "status": "accepted"}
                           | ({"withheld": withheld} if withheld else {}))
    return results


def _store_field(db: HubDatabase, device: Device, report: dict, model: dict, role: str, stats: dict) -> None:
    """One role's field evidence of a model version (schema 2), as typed columns."""
    agreement = stats["agreement"] or {}
    feedback = stats["feedback"]
    db.execute(
        "INSERT INTO report_field (report_id, device_id, day, model_id, model_version, role, k, first_day, scored, "
        "flagged, not_analysed, ttr_p50, ttr_p95, both_flagged, shadow_only, active_only, neither_flagged, "
        "flag_agreed, flag_disagreed, missed_finding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (device_id, report_id, model_id, model_version, role) DO NOTHING",
        (report["report_id"], device.device_id, report["day"], model["model_id"], model["model_version"], role,
         report["k"], stats["first_day"], stats["scored"], stats["flagged"],
         sum(v for v in stats["not_analysed"].values() if v is not None),
         stats["time_to_result_s"]["p50"], stats["time_to_result_s"]["p95"],
         agreement.get("both"), agreement.get("shadow_only"), agreement.get("active_only"),
         agreement.get("neither"), feedback["flag_agreed"], feedback["flag_disagreed"], feedback["missed_finding"]))


def check_in(db: HubDatabase, device: Device, body: dict, now: float) -> dict:
    """Record what the box runs and how fresh its release metadata is; answer with its ring
    and the releases withdrawn (the box drops them from shadow)."""
    version = body.get("appliance_version")
    models = body.get("models")
    refreshed = body.get("metadata_refreshed_at")
    error = body.get("release_error")
    if not isinstance(version, str) or len(version) > 64:
        raise Refused(400, "appliance_version: must be a string")
    if not isinstance(models, list) or not all(
            isinstance(m, dict) and set(m) == {"model_id", "version", "state"}
            and all(isinstance(v, str) and len(v) <= 64 for v in m.values()) for m in models):
        raise Refused(400, "models: must be a list of {model_id, version, state}")
    if refreshed is not None and not isinstance(refreshed, (int, float)):
        raise Refused(400, "metadata_refreshed_at: must be seconds since the epoch or null")
    if error is not None and (not isinstance(error, str) or len(error) > 500):
        raise Refused(400, "release_error: must be a short string or null")
    alerts = _drift_alerts(body.get("drift_alerts"))
    audit_state = None
    if body.get("audit") is not None:  # an older box does not send it
        try:
            audit_state = check_audit(db, device.device_id, body["audit"], now)
        except audit.BadEvidence as exc:
            raise Refused(400, str(exc)) from None
    db.execute("UPDATE devices SET last_checkin = ?, appliance_version = ?, models = ?, "
               "metadata_refreshed_at = ?, release_error = ?, drift_alerts = ? WHERE device_id = ?",
               (now, version, json.dumps(models), refreshed, error,
                None if alerts is None else json.dumps(alerts), device.device_id))
    withdrawn = [{"model_id": m, "version": v} for m, v in db.rows(
        "SELECT model_id, version FROM releases WHERE withdrawn_at IS NOT NULL ORDER BY model_id, version")]
    return {"device_id": device.device_id, "ring": device.ring, "audit": audit_state, "withdrawn": withdrawn}


def audit_anchor(db: HubDatabase, device: Device) -> dict:
    """The sequence number of the anchor the hub holds for this box (null: none yet)."""
    held = _held_anchor(db, device.device_id)
    return {"seq": held[0] if held else None}


def _held_anchor(db: HubDatabase, device_id: str) -> tuple[int, str] | None:
    row = db.one("SELECT audit_seq, audit_hash FROM devices WHERE device_id = ?", (device_id,))
    return (int(row[0]), str(row[1])) if row and row[0] is not None else None


def check_audit(db: HubDatabase, device_id: str, evidence: object, now: float) -> str:
    """Compare a check-in's audit evidence with the anchor held (:mod:`training.hub.audit`),
    keep the first problem, move the anchor to the box's head while all agrees; return
    ``"consistent"`` or the problem.

    Raises
    ------
    training.hub.audit.BadEvidence
    """
    head, at = audit.parse(evidence)
    with db.transaction():
        found = audit.problem(_held_anchor(db, device_id), head, at)
        known = db.one("SELECT audit_problem FROM devices WHERE device_id = ?", (device_id,))
        earlier = known[0] if known else None
        if found is not None and earlier is None:
            log.warning("device %s: audit chain does not match the hub's anchor: %s", device_id, found)
            db.execute("UPDATE devices SET audit_problem = ? WHERE device_id = ?", (found, device_id))
        if found is None and earlier is None and head is not None:
            db.execute(
                "UPDATE devices SET audit_seq = ?, audit_hash = ? WHERE device_id = ? "
                "AND (audit_seq IS NULL OR audit_seq <= ?)",
                (head[0], head[1], device_id, head[0]),
            )
        db.execute("UPDATE devices SET audit_checked_at = ? WHERE device_id = ?", (now, device_id))
    return earlier or found or "consistent"


def _note_report_anchor(db: HubDatabase, device_id: str, seq: int, digest: str) -> None:
    """A report's chain head becomes the anchor when it is the newest; one that names the
    anchor's own seq with another hash is a problem (inside the caller's transaction)."""
    held = _held_anchor(db, device_id)
    if held is not None and held[0] == seq and held[1] != digest:
        db.execute(
            "UPDATE devices SET audit_problem = COALESCE(audit_problem, ?) WHERE device_id = ?",
            (f"a report names seq {seq} with another hash than the hub's anchor (rewritten and re-hashed)", device_id),
        )
        return
    db.execute(
        "UPDATE devices SET audit_seq = ?, audit_hash = ? WHERE device_id = ? AND audit_problem IS NULL "
        "AND (audit_seq IS NULL OR audit_seq < ?)",
        (seq, digest, device_id, seq),
    )


def clear_audit_problem(db: HubDatabase, device_id: str, reason: str, now: float) -> str | None:
    """An operator's word that a device's audit problem is explained (a restore from a
    backup cuts the log short by design): forget the problem and the hub's anchor, so the
    next check-in anchors the chain at the box's head again; keep when, why and what was
    cleared on the device. Returns the problem cleared, or None when there was none.

    Raises
    ------
    LookupError
        No such device.
    """
    with db.transaction():
        row = db.one("SELECT audit_problem FROM devices WHERE device_id = ?", (device_id,))
        if row is None:
            raise LookupError(f"no device {device_id}")
        if row[0] is None:
            return None
        cleared = json.dumps({"at": now, "reason": reason, "problem": row[0]})
        db.execute("UPDATE devices SET audit_problem = NULL, audit_seq = NULL, audit_hash = NULL, audit_cleared = ? "
                   "WHERE device_id = ?", (cleared, device_id))
    log.warning("device %s: audit problem cleared by an operator (%s): %s", device_id, reason, row[0])
    return row[0]


def set_ring(db: HubDatabase, device_id: str, ring: str) -> bool:
    """Move a device to another ring (it follows at its next check-in); False: no such device."""
    if ring not in RINGS:
        raise ValueError(f"ring {ring!r}: must be one of {', '.join(RINGS)}")
    return bool(db.execute("UPDATE devices SET ring = ? WHERE device_id = ?", (ring, device_id)))


def _drift_alerts(alerts: object) -> list[dict] | None:
    """The check-in's optional ``drift_alerts``: a list of {model_id, version, feature},
    the feature a name of the monitor's controlled vocabulary; None when the box did not
    say (an older box), which the fleet page shows as not reported."""
    if alerts is None:
        return None
    if not isinstance(alerts, list) or len(alerts) > MAX_DRIFT_ALERTS:
        raise Refused(400, f"drift_alerts: must be a list of at most {MAX_DRIFT_ALERTS} items")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict) or set(alert) != {"model_id", "version", "feature"}:
            raise Refused(400, f"drift_alerts[{i}]: must be {{model_id, version, feature}}")
        if not isinstance(alert["model_id"], str) or not LABEL_RE.match(alert["model_id"]):
            raise Refused(400, f"drift_alerts[{i}].model_id: must be a controlled label")
        if not isinstance(alert["version"], str) or not _VERSION.match(alert["version"]):
            raise Refused(400, f"drift_alerts[{i}].version: must be a version")
        if not isinstance(alert["feature"], str) or alert["feature"] not in FEATURE_NAMES:
            raise Refused(400, f"drift_alerts[{i}].feature: not a drift feature name")
    return sorted(alerts, key=lambda a: (a["model_id"], a["version"], a["feature"]))

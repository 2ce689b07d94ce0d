"""Radiologists' feedback on a result: the one writer of ``web_feedback``.

Each verdict is kept with the model id and version that produced the result (a label
for later training of that model line) and is an audit event in the same transaction.
"""

from __future__ import annotations

import sqlite3
import time

from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.errors import AccessError
from appliance.states import ModelState

VERDICTS = {
    "agree": "Agree",
    "false-positive": "False positive",
    "missed-finding": "Missed finding",
    "image-problem": "Image problem",
}
MAX_COMMENT = 2000


def record(conn: sqlite3.Connection, study_uid: str, series_uid: str, verdict: str, comment: str, user: str) -> int:
    """Record one verdict on the current active result of a series; returns its audit seq."""
    if verdict not in VERDICTS:
        raise AccessError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    comment = comment.strip()[:MAX_COMMENT]
    with transaction(conn):
        row = conn.execute(
            "SELECT r.id, r.model_id, r.model_version, r.flag FROM inference_results r JOIN series s "
            "ON s.series_instance_uid = r.series_instance_uid AND s.generation = r.generation "
            "WHERE r.series_instance_uid = ? AND r.study_instance_uid = ? AND r.role = ? "
            "AND r.superseded = 0 ORDER BY r.id DESC LIMIT 1",
            (series_uid, study_uid, ModelState.ACTIVE),
        ).fetchone()
        if row is None:
            raise AccessError("that series has no current result to give feedback on")
        result_id, model_id, version, flag = row
        seq = audit_log.append_in(
            conn,
            "web-feedback",
            {
                "study_instance_uid": study_uid,
                "series_instance_uid": series_uid,
                "inference_result_id": result_id,
                "model_id": model_id,
                "model_version": version,
                "flag": bool(flag),
                "verdict": verdict,
                "comment": comment,
                "user": user,
            },
        )
        conn.execute(
            "INSERT INTO web_feedback (study_instance_uid, series_instance_uid, inference_result_id, model_id, "
            "model_version, flag, verdict, comment, user_name, audit_seq, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (study_uid, series_uid, result_id, model_id, version, flag, verdict, comment, user, seq, time.time()),
        )
    return seq


def of_study(conn: sqlite3.Connection, study_uid: str) -> list[dict]:
    cols = ("series_instance_uid", "model_id", "model_version", "verdict", "comment", "user_name", "created_at")
    rows = conn.execute(
        f"SELECT {', '.join(cols)} FROM web_feedback WHERE study_instance_uid = ? ORDER BY id", (study_uid,)
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


def local_ppv(conn: sqlite3.Connection) -> dict[tuple[str, str], dict]:
    """Per model version: flagged results judged, of which agreed (the local PPV)."""
    out: dict[tuple[str, str], dict] = {}
    for model_id, version, verdict, n in conn.execute(
        "SELECT model_id, model_version, verdict, COUNT(*) FROM web_feedback WHERE flag = 1 "
        "GROUP BY model_id, model_version, verdict"
    ):
        entry = out.setdefault((model_id, version), {"judged": 0, "agreed": 0})
        if verdict in ("agree", "false-positive"):
            entry["judged"] += n
            entry["agreed"] += n if verdict == "agree" else 0
    for entry in out.values():
        entry["ppv"] = entry["agreed"] / entry["judged"] if entry["judged"] else None
    return out

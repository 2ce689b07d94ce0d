"""The per-study summary the worklist reads: the one writer of ``web_studies``.

The pipeline keeps one row per *series* (``series``, ``jobs``, ``inference_results``);
radiologists read per *study*. ``web_studies`` is a summary: :func:`refresh` recomputes
the studies whose series changed since the newest summary (with an overlap, so a
transaction committed late is not missed) and reads the patient name, patient ID,
accession and study description of each new study from its first stored instance
(header only). The worker runs it on a schedule (:mod:`appliance.outcome.upkeep`); the
pages only read the table, whatever the size of the archive, and say how old it is.

A study's state (:class:`~appliance.states.StudyState`), most urgent first: flagged (any
series flagged), failed (any series failed: part of the study went unread by the
model), pending (still arriving, queued or running), not flagged (analysed, nothing
found), not analysed (no series was eligible; the reason says why).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pydicom

from appliance.db import transaction
from appliance.states import IN_FLIGHT, ModelState, SeriesState, StudyState

#: Series changed this long before the newest summary are looked at again (seconds).
OVERLAP_S = 60.0
_HEADER_TAGS = ("PatientName", "PatientID", "AccessionNumber", "StudyDescription")
_CHUNK = 500  # studies per header query


@dataclass(frozen=True)
class SeriesRow:
    series_instance_uid: str
    modality: str
    state: SeriesState
    reason: str | None
    flag: int | None
    score: float | None
    model: str | None
    first_received_at: float
    last_received_at: float
    updated_at: float
    priority: int | None
    result_at: float | None


@dataclass(frozen=True)
class Summary:
    state: StudyState
    reason: str | None
    priority: int
    modalities: str
    models: str
    received_at: float
    result_at: float | None
    time_to_result_s: float | None
    score: float | None
    first_series_uid: str
    updated_at: float


def summarize(rows: list[SeriesRow], findings: dict[str, str]) -> Summary:
    """One study's worklist summary from its series (pure).

    ``findings`` maps a model label (``"id version"``) to the finding it looks for,
    which is the reason shown on a flagged study.
    """
    rows = sorted(rows, key=lambda r: (r.first_received_at, r.series_instance_uid))
    triaged = [r for r in rows if r.state == SeriesState.TRIAGED]
    flagged = [r for r in triaged if r.flag]
    failed = [r for r in rows if r.state == SeriesState.FAILED]
    pending = [r for r in rows if r.state in IN_FLIGHT]
    state: StudyState
    if flagged:
        state, reason = StudyState.FLAGGED, ", ".join(sorted({findings.get(r.model or "", "finding") for r in flagged}))
    elif failed:
        state, reason = StudyState.FAILED, failed[0].reason or "no reason recorded"
    elif pending:
        state, reason = StudyState.PENDING, pending[0].state.value
    elif triaged:
        state, reason = StudyState.NOT_FLAGGED, None
    else:
        state, reason = StudyState.NOT_ANALYSED, next((r.reason for r in rows if r.reason), "no reason recorded")
    decided = [r for r in rows if r.state not in IN_FLIGHT]
    result_at = None
    if not pending and decided:
        result_at = max(
            (r.result_at if r.state == SeriesState.TRIAGED and r.result_at else r.updated_at) for r in decided
        )
    last_received = max(r.last_received_at for r in rows)
    scores = [r.score for r in triaged if r.score is not None]
    return Summary(
        state=state,
        reason=reason,
        priority=max((r.priority or 0) for r in rows),
        modalities=",".join(sorted({r.modality for r in rows if r.modality})),
        models=", ".join(sorted({r.model for r in triaged if r.model})),
        received_at=rows[0].first_received_at,
        result_at=result_at,
        time_to_result_s=None if result_at is None else max(result_at - last_received, 0.0),
        score=max(scores) if scores else None,
        first_series_uid=rows[0].series_instance_uid,
        updated_at=max(r.updated_at for r in rows),
    )


def _findings(conn: sqlite3.Connection) -> dict[str, str]:
    return {
        f"{model_id} {version}": json.loads(manifest).get("finding", "finding")
        for model_id, version, manifest in conn.execute("SELECT id, version, manifest FROM models")
    }


def refresh(conn: sqlite3.Connection) -> int:
    """Bring ``web_studies`` up to date with the series rows, the header fields of new
    studies included; returns how many studies were rewritten."""
    newest = conn.execute("SELECT MAX(updated_at) FROM web_studies").fetchone()[0]
    since = -1.0 if newest is None else newest - OVERLAP_S
    rows = conn.execute(
        "SELECT s.study_instance_uid, s.series_instance_uid, s.modality, s.state, s.reason, s.flag, s.score, "
        "s.model, s.first_received_at, s.last_received_at, s.updated_at, "
        "(SELECT MAX(priority) FROM jobs j WHERE j.series_instance_uid = s.series_instance_uid), "
        "(SELECT MAX(created_at) FROM inference_results r WHERE r.series_instance_uid = s.series_instance_uid "
        " AND r.role = ? AND r.superseded = 0) "
        "FROM series s WHERE s.study_instance_uid IN "
        "(SELECT study_instance_uid FROM series WHERE updated_at > ?)",
        (ModelState.ACTIVE, since),
    ).fetchall()
    if not rows:
        return 0
    by_study: dict[str, list[SeriesRow]] = {}
    for row in rows:
        by_study.setdefault(row[0], []).append(SeriesRow(row[1], row[2], SeriesState(row[3]), *row[4:]))
    findings = _findings(conn)
    values = []
    for study, series in by_study.items():
        s = summarize(series, findings)
        values.append(
            (
                study,
                s.state,
                int(s.state == StudyState.FLAGGED),
                s.priority,
                s.reason,
                s.modalities,
                s.models,
                len(series),
                s.received_at,
                s.result_at,
                s.time_to_result_s,
                s.score,
                s.first_series_uid,
                s.updated_at,
            )
        )
    with transaction(conn):
        conn.executemany(
            "INSERT INTO web_studies (study_instance_uid, state, flag_rank, priority, reason, modalities, "
            "models, series_count, received_at, result_at, time_to_result_s, score, first_series_uid, "
            "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (study_instance_uid) DO UPDATE SET "
            "state = excluded.state, flag_rank = excluded.flag_rank, priority = excluded.priority, "
            "reason = excluded.reason, modalities = excluded.modalities, models = excluded.models, "
            "series_count = excluded.series_count, received_at = excluded.received_at, "
            "result_at = excluded.result_at, time_to_result_s = excluded.time_to_result_s, "
            "score = excluded.score, first_series_uid = excluded.first_series_uid, "
            "updated_at = excluded.updated_at",
            values,
        )
    studies = list(by_study)
    for start in range(0, len(studies), _CHUNK):
        fill_headers(conn, studies[start : start + _CHUNK])
    return len(values)


def read_header(path: Path) -> dict[str, str]:
    """Patient name, patient ID, accession and study description as sent (header only)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
    return {tag: str(ds.get(tag, "") or "") for tag in _HEADER_TAGS}


def fill_headers(conn: sqlite3.Connection, studies: list[str]) -> None:
    """Read and keep the header fields of the given studies not read yet."""
    missing = (
        [
            uid
            for (uid,) in conn.execute(
                f"SELECT study_instance_uid FROM web_studies WHERE header_read = 0 AND study_instance_uid IN "
                f"({','.join('?' * len(studies))})",
                studies,
            )
        ]
        if studies
        else []
    )
    if not missing:
        return
    updates = []
    for study in missing:
        row = conn.execute(
            "SELECT i.path FROM web_studies w JOIN instances i ON i.series_instance_uid = w.first_series_uid "
            "WHERE w.study_instance_uid = ? ORDER BY i.received_at LIMIT 1",
            (study,),
        ).fetchone()
        try:
            header = read_header(Path(row[0])) if row else None
        except (OSError, pydicom.errors.InvalidDicomError):
            header = None
        if header is None:
            updates.append((2, "", "", "", "", study))  # 2: the stored file could not be read
        else:
            updates.append(
                (
                    1,
                    header["PatientName"],
                    header["PatientID"],
                    header["AccessionNumber"],
                    header["StudyDescription"],
                    study,
                )
            )
    with transaction(conn):
        conn.executemany(
            "UPDATE web_studies SET header_read = ?, patient_name = ?, patient_id = ?, accession = ?, "
            "study_description = ? WHERE study_instance_uid = ?",
            updates,
        )

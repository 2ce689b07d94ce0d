"""The worklist's view of studies: the one writer of ``web_studies``.

The pipeline keeps one row per *series* (``series``, ``jobs``, ``inference_results``);
radiologists read per *study*. ``web_studies`` is a summary cache: :func:`refresh`
recomputes the studies whose series changed since the newest summary (with an overlap,
so a transaction committed late is not missed), and :func:`fill_headers` reads patient
name, patient ID, accession and study description from the first stored instance of a
study (header only) the first time that study is shown. Both are cheap per request, so
the worklist reads one indexed table whatever the size of the archive.

A study's state, most urgent first: ``flagged`` (any series flagged), ``failed`` (any
series failed: part of the study went unread by the model), ``pending`` (still arriving or
queued), ``not-flagged`` (analysed, nothing found), ``not-analysed`` (no series was
eligible; the reason says why).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom

from appliance.db import transaction
from appliance.states import IN_FLIGHT, ModelState, SeriesState, StudyState

#: Series changed this long before the newest summary are looked at again (seconds).
OVERLAP_S = 60.0
_HEADER_TAGS = ("PatientName", "PatientID", "AccessionNumber", "StudyDescription")
_lock = threading.Lock()
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(text: str) -> bool:
    """Digits and dots, at most 64 characters: safe in a query and in a file name."""
    return len(text) <= 64 and bool(_UID.match(text))


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
    """Bring ``web_studies`` up to date with the series rows; returns studies rewritten."""
    with _lock:
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


@dataclass(frozen=True)
class Filters:
    """What the worklist shows; every field comes from (and goes back to) the URL."""

    state: str = ""
    modality: str = ""
    model: str = ""
    since: float | None = None
    until: float | None = None

    def where(self) -> tuple[str, list[str | float]]:
        clauses: list[str] = []
        params: list[str | float] = []
        if self.state:
            clauses.append("state = ?")
            params.append(self.state)
        if self.modality:
            clauses.append("(',' || modalities || ',') LIKE ?")
            params.append(f"%,{self.modality},%")
        if self.model:
            clauses.append("models LIKE ?")
            params.append(f"%{self.model}%")
        if self.since is not None:
            clauses.append("received_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("received_at < ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_COLUMNS = (
    "study_instance_uid",
    "state",
    "priority",
    "reason",
    "modalities",
    "models",
    "series_count",
    "received_at",
    "result_at",
    "time_to_result_s",
    "score",
    "header_read",
    "patient_name",
    "patient_id",
    "accession",
    "study_description",
    "updated_at",
)


def page(conn: sqlite3.Connection, filters: Filters, number: int, size: int) -> tuple[list[dict], int]:
    """One page of the worklist (flagged first, then priority, then newest arrival) and the total."""
    where, params = filters.where()
    total = conn.execute(f"SELECT COUNT(*) FROM web_studies{where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM web_studies{where} "
        "ORDER BY flag_rank DESC, priority DESC, received_at DESC LIMIT ? OFFSET ?",
        [*params, size, max(number - 1, 0) * size],
    ).fetchall()
    found = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
    unread = [r["study_instance_uid"] for r in found if not r["header_read"]]
    if unread:
        fill_headers(conn, unread)
        fresh = {
            r[0]: r
            for r in conn.execute(
                f"SELECT study_instance_uid, header_read, patient_name, patient_id, accession, study_description "
                f"FROM web_studies WHERE study_instance_uid IN ({','.join('?' * len(unread))})",
                unread,
            )
        }
        for r in found:
            if r["study_instance_uid"] in fresh:
                _, r["header_read"], r["patient_name"], r["patient_id"], r["accession"], r["study_description"] = fresh[
                    r["study_instance_uid"]
                ]
    return found, total


def study(conn: sqlite3.Connection, study_uid: str) -> dict | None:
    """The summary row of one study (headers read if needed), or None."""
    fill_headers(conn, [study_uid])
    row = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM web_studies WHERE study_instance_uid = ?", (study_uid,)
    ).fetchone()
    return dict(zip(_COLUMNS, row, strict=True)) if row else None


def ledger(conn: sqlite3.Connection, since: float, until: float) -> dict:
    """The coverage ledger of studies that arrived in ``[since, until)``.

    ``received`` always equals the sum of the parts, each study counted once in the state
    that matters most; not-analysed and failed studies are split by their reason.
    """
    counts = dict.fromkeys(StudyState, 0)
    reasons: dict[StudyState, dict[str, int]] = {StudyState.NOT_ANALYSED: {}, StudyState.FAILED: {}}
    for text, reason, n in conn.execute(
        "SELECT state, reason, COUNT(*) FROM web_studies WHERE received_at >= ? AND received_at < ? "
        "GROUP BY state, reason",
        (since, until),
    ):
        state = StudyState(text)
        counts[state] += n
        if state in reasons:
            why = reason or "no reason recorded"
            reasons[state][why] = reasons[state].get(why, 0) + n
    return {
        "received": sum(counts.values()),
        **{state.value: n for state, n in counts.items()},
        "not_analysed_by_reason": sorted(reasons[StudyState.NOT_ANALYSED].items(), key=lambda kv: -kv[1]),
        "failed_by_reason": sorted(reasons[StudyState.FAILED].items(), key=lambda kv: -kv[1]),
    }


def series_of(conn: sqlite3.Connection, study_uid: str) -> list[dict]:
    """Every series of a study with its state and active, current result (if any)."""
    cols = (
        "series_instance_uid",
        "modality",
        "body_part",
        "series_description",
        "instances",
        "state",
        "reason",
        "flag",
        "score",
        "model",
        "first_received_at",
        "last_received_at",
        "updated_at",
        "result_id",
        "model_id",
        "model_version",
        "threshold",
        "sr_instance_uid",
        "sc_instance_uid",
        "result_at",
    )
    rows = conn.execute(
        "SELECT s.series_instance_uid, s.modality, s.body_part, s.series_description, s.instances, s.state, "
        "s.reason, s.flag, s.score, s.model, s.first_received_at, s.last_received_at, s.updated_at, r.id, "
        "r.model_id, r.model_version, r.threshold, r.sr_instance_uid, r.sc_instance_uid, r.created_at "
        "FROM series s LEFT JOIN inference_results r ON r.id = (SELECT MAX(id) FROM inference_results x "
        "WHERE x.series_instance_uid = s.series_instance_uid AND x.role = ? AND x.superseded = 0 "
        "AND x.generation = s.generation) WHERE s.study_instance_uid = ? ORDER BY s.first_received_at",
        (ModelState.ACTIVE, study_uid),
    ).fetchall()
    return [dict(zip(cols, row, strict=True)) for row in rows]


def result_file(conn: sqlite3.Connection, results_dir: Path, study_uid: str, sop_instance_uid: str) -> Path | None:
    """The stored result object (SR or SC) of this study with this SOP instance UID."""
    if not (is_uid(study_uid) and is_uid(sop_instance_uid)):
        return None
    row = conn.execute(
        "SELECT path FROM outbox WHERE sop_instance_uid = ? AND study_instance_uid = ? LIMIT 1",
        (sop_instance_uid, study_uid),
    ).fetchone()
    path = Path(row[0]) if row else results_dir / study_uid / f"{sop_instance_uid}.dcm"
    return path if path.is_file() else None

"""Field evidence of a model version on this box, for the daily report: how each of its
roles (active, shadow) did (read only).

Two kinds of figures, per role:

* **the day's**: results scored and flagged, not analysed by reason code, a score
  histogram and the time from the last instance received to the result;
* **to date** (every result up to the end of the day): the shadow-versus-active 2x2 of
  flags on the same series, and the radiologists' verdicts. These are rare events (a few
  a day), which a daily count under ``k`` would always hide; summed to date they pass
  ``k``, and :func:`ratchet` publishes them only in steps of at least ``k``, so the
  difference of two days' reports never reveals a count under ``k``.

A verdict is given on the active model's result; it says what the series holds, and so
judges the shadow's result of the same series too: a flag the radiologist agreed with,
or a missed finding, means the finding is there; a flag called a false positive, or
agreement with no flag, means it is not; an image problem says neither. The latest
verdict on a series counts.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field

from appliance.drift.aggregate import reason_code
from appliance.states import ModelState, SeriesState

#: Bins of the score histogram (scores are in [0, 1]).
SCORE_EDGES: tuple[float, ...] = tuple(i / 10 for i in range(11))
#: The roles a model version's results are reported under.
ROLES: tuple[ModelState, ...] = (ModelState.ACTIVE, ModelState.SHADOW)
AGREEMENT_CELLS = ("both", "shadow_only", "active_only", "neither")
FEEDBACK_CELLS = ("flag_agreed", "flag_disagreed", "missed_finding")
DAY_S = 86400.0


@dataclass(frozen=True)
class RoleEvidence:
    """What one role of a model version showed: the day's figures and the to-date ones."""

    role: ModelState
    first_day: dt.date
    scored: int = 0
    flagged: int = 0
    not_analysed: dict[str, int] = field(default_factory=dict)
    score_counts: tuple[int, ...] = (0,) * (len(SCORE_EDGES) - 1)
    times_s: tuple[float, ...] = ()
    agreement: dict[str, int] | None = None
    feedback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDBACK_CELLS, 0))


def _start(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def result_days(conn: sqlite3.Connection, before: dt.date) -> list[tuple[str, str, dt.date]]:
    """(model id, version, day) of every UTC day before ``before`` with a result of any role."""
    rows = conn.execute(
        "SELECT DISTINCT model_id, model_version, date(created_at, 'unixepoch') FROM inference_results "
        "WHERE created_at < ?",
        (_start(before),),
    )
    return [(m, v, dt.date.fromisoformat(d)) for m, v, d in rows]


def score_counts(scores: list[float]) -> tuple[int, ...]:
    """Counts of ``scores`` in the bins of :data:`SCORE_EDGES` (pure; the last bin holds 1.0)."""
    counts = [0] * (len(SCORE_EDGES) - 1)
    for score in scores:
        index = min(max(int(float(score) * (len(SCORE_EDGES) - 1)), 0), len(counts) - 1)
        counts[index] += 1
    return tuple(counts)


def truth(verdict: str, active_flag: bool) -> bool | None:
    """What a verdict on the active result says the series holds (pure); None: it says neither."""
    if verdict == "missed-finding":
        return True
    if verdict == "false-positive":
        return False
    if verdict == "agree":
        return active_flag
    return None


def feedback_counts(judged: list[tuple[bool, bool]]) -> dict[str, int]:
    """Verdict counts of one model's results (pure): ``judged`` holds (its flag, finding
    there) per series."""
    out = dict.fromkeys(FEEDBACK_CELLS, 0)
    for flag, present in judged:
        if flag:
            out["flag_agreed" if present else "flag_disagreed"] += 1
        elif present:
            out["missed_finding"] += 1
    return out


def ratchet(count: int, previous: int | None, k: int) -> int | None:
    """The to-date count to publish (pure): ``count`` once it is at least ``k`` above the
    last published one (``previous``, None for never), else the last published one again.
    Two published values therefore differ by 0 or by at least ``k``."""
    if count - (previous or 0) >= k:
        return count
    return previous


def evidence(conn: sqlite3.Connection, model_id: str, version: str, day: dt.date) -> list[RoleEvidence]:
    """The evidence of each role in which this model version had a result up to the end of ``day``."""
    start = _start(day)
    end = start + DAY_S
    firsts = dict(
        conn.execute(
            "SELECT role, MIN(created_at) FROM inference_results WHERE model_id = ? AND model_version = ? "
            "AND created_at < ? GROUP BY role",
            (model_id, version, end),
        ).fetchall()
    )
    out = []
    for role in ROLES:
        if role not in firsts:
            continue
        rows = conn.execute(
            "SELECT r.score, r.flag, r.created_at - s.last_received_at FROM inference_results r "
            "LEFT JOIN series s ON s.series_instance_uid = r.series_instance_uid AND s.generation = r.generation "
            "WHERE r.model_id = ? AND r.model_version = ? AND r.role = ? AND r.created_at >= ? AND r.created_at < ?",
            (model_id, version, role, start, end),
        ).fetchall()
        out.append(
            RoleEvidence(
                role=role,
                first_day=dt.datetime.fromtimestamp(firsts[role], dt.UTC).date(),
                scored=len(rows),
                flagged=sum(1 for _, flag, _ in rows if flag),
                not_analysed=_not_analysed(conn, model_id, version, role, day),
                score_counts=score_counts([score for score, _, _ in rows]),
                times_s=tuple(max(float(t), 0.0) for _, _, t in rows if t is not None),
                agreement=_agreement(conn, model_id, version, end) if role == ModelState.SHADOW else None,
                feedback=_feedback(conn, model_id, version, role, end),
            )
        )
    return out


def _not_analysed(conn: sqlite3.Connection, model_id: str, version: str, role: str, day: dt.date) -> dict[str, int]:
    """The day's series this role did not analyse, by reason code: the active model's from the
    drift rows, the shadow's from its audited errors (on the jobs of that day)."""
    if role == ModelState.ACTIVE:
        rows = conn.execute(
            "SELECT outcome, COUNT(*) FROM drift_series WHERE model_id = ? AND model_version = ? AND day = ? "
            "AND outcome != ? GROUP BY outcome",
            (model_id, version, day.isoformat(), SeriesState.TRIAGED),
        ).fetchall()
        return dict(sorted(rows))
    codes: dict[str, int] = {}
    for (error,) in conn.execute(
        "SELECT json_extract(a.payload, '$.error') FROM audit_log a JOIN drift_series d "
        "ON d.job_id = json_extract(a.payload, '$.job_id') WHERE a.kind = 'inference' "
        "AND json_extract(a.payload, '$.role') = ? AND json_extract(a.payload, '$.model_id') = ? "
        "AND json_extract(a.payload, '$.model_version') = ? AND json_extract(a.payload, '$.error') IS NOT NULL "
        "AND d.day = ?",
        (role, model_id, version, day.isoformat()),
    ):
        code = reason_code(str(error))
        codes[code] = codes.get(code, 0) + 1
    return dict(sorted(codes.items()))


def _agreement(conn: sqlite3.Connection, model_id: str, version: str, end: float) -> dict[str, int]:
    """The shadow's flags against the active model's on the same jobs, to date."""
    cells = dict.fromkeys(AGREEMENT_CELLS, 0)
    for active_flag, shadow_flag, n in conn.execute(
        "SELECT a.flag, s.flag, COUNT(*) FROM inference_results s JOIN inference_results a "
        "ON a.job_id = s.job_id AND a.role = ? WHERE s.role = ? AND s.model_id = ? AND s.model_version = ? "
        "AND s.created_at < ? GROUP BY a.flag, s.flag",
        (ModelState.ACTIVE, ModelState.SHADOW, model_id, version, end),
    ):
        key = {(1, 1): "both", (0, 1): "shadow_only", (1, 0): "active_only", (0, 0): "neither"}
        cells[key[(int(bool(active_flag)), int(bool(shadow_flag)))]] += n
    return cells


def _feedback(conn: sqlite3.Connection, model_id: str, version: str, role: str, end: float) -> dict[str, int]:
    """The latest verdict per series on this role's results to date, as verdict counts."""
    latest: dict[int, tuple[bool, str, bool]] = {}
    for result_id, flag, verdict, active_flag in conn.execute(
        "SELECT r.id, r.flag, f.verdict, a.flag FROM inference_results r JOIN inference_results a "
        "ON a.job_id = r.job_id AND a.role = ? JOIN web_feedback f ON f.inference_result_id = a.id "
        "WHERE r.model_id = ? AND r.model_version = ? AND r.role = ? AND r.created_at < ? ORDER BY f.id",
        (ModelState.ACTIVE, model_id, version, role, end),
    ):
        latest[result_id] = (bool(flag), verdict, bool(active_flag))
    judged = []
    for flag, verdict, active_flag in latest.values():
        present = truth(verdict, active_flag)
        if present is not None:
            judged.append((flag, present))
    return feedback_counts(judged)

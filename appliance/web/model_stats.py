"""Read-only figures for the models page: shadow-versus-active agreement and the alert
budget (flag rate and local PPV at the current and at other thresholds)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.states import ModelState

WHAT_IF_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DAY = 86400.0


@dataclass(frozen=True)
class Agreement:
    model_id: str
    shadow_version: str
    cases: int
    flag_agreement: float | None
    mean_abs_score_difference: float | None
    pairs: list[tuple[float, float]]  # (active score, shadow score), newest 200, for the scatter


def shadow_agreement(conn: sqlite3.Connection) -> list[Agreement]:
    """Per shadow model version: over the series it saw, how often its flag matched the active one's."""
    rows = conn.execute(
        "SELECT s.model_id, s.model_version, a.score, s.score, a.flag, s.flag FROM inference_results s "
        "JOIN inference_results a ON a.job_id = s.job_id AND a.role = ? WHERE s.role = ? "
        "ORDER BY s.id DESC",
        (ModelState.ACTIVE, ModelState.SHADOW),
    ).fetchall()
    grouped: dict[tuple[str, str], list[tuple]] = {}
    for model_id, version, *values in rows:
        grouped.setdefault((model_id, version), []).append(tuple(values))
    out = []
    for (model_id, version), values in sorted(grouped.items()):
        agree = sum(1 for _, _, af, sf in values if bool(af) == bool(sf))
        out.append(
            Agreement(
                model_id,
                version,
                len(values),
                agree / len(values),
                sum(abs(a - s) for a, s, _, _ in values) / len(values),
                [(a, s) for a, s, _, _ in values[:200]],
            )
        )
    return out


def what_if(scores: list[tuple[float, str | None, int]], days: float, thresholds: tuple[float, ...]) -> list[dict]:
    """Flags per day and local PPV at each threshold (pure).

    ``scores`` holds ``(score, verdict or None, flagged then)``. A judged case counts as
    positive when the radiologist agreed with a flag or reported a missed finding, and as
    negative when they called a flag a false positive or agreed with a negative.
    """
    out = []
    for threshold in thresholds:
        flagged = [(score, verdict, was) for score, verdict, was in scores if score >= threshold]
        judged = positives = 0
        for _, verdict, was in flagged:
            if verdict is None or verdict == "image-problem":
                continue
            judged += 1
            positives += verdict == "missed-finding" or (verdict == "agree" and was)
        out.append(
            {
                "threshold": threshold,
                "flags_per_day": len(flagged) / days if days else 0.0,
                "judged": judged,
                "ppv": positives / judged if judged else None,
            }
        )
    return out


def alert_budget(conn: sqlite3.Connection, model_id: str, threshold: float, now: float, days: int = 30) -> dict:
    """The active model line's last ``days`` of local scores under the what-if thresholds.

    Rates are per day over the span the results cover: ``days``, or less on a box whose
    first result is younger (at least one day, so a box up for minutes shows today's count).
    """
    rows = conn.execute(
        "SELECT r.score, (SELECT verdict FROM web_feedback f WHERE f.inference_result_id = r.id ORDER BY f.id DESC "
        "LIMIT 1), r.flag, r.created_at FROM inference_results r WHERE r.role = ? AND r.model_id = ? "
        "AND r.superseded = 0 AND r.created_at > ?",
        (ModelState.ACTIVE, model_id, now - days * DAY),
    ).fetchall()
    first = min((r[3] for r in rows), default=now)
    span = min(float(days), max((now - first) / DAY, 1.0))
    thresholds = tuple(sorted(set(WHAT_IF_THRESHOLDS) | {round(threshold, 4)}))
    return {
        "model_id": model_id,
        "threshold": threshold,
        "cases": len(rows),
        "days": days,
        "span": days_in_words(span),
        "age_s": now - first,  # since the first result in the window
        "rows": what_if([r[:3] for r in rows], span, thresholds),
    }


def days_in_words(days: float) -> str:
    """``1 day``, ``2.5 days``, ``30 days``."""
    text = f"{days:.1f}".removesuffix(".0")
    return f"{text} day" if text == "1" else f"{text} days"

"""The anonymised daily drift report (the object the central hub receives).

Per model version and day: counts and binned histograms only, every cell below ``k``
suppressed (null), and every cell of a model version whose day had fewer than ``k`` series
(a pixel histogram counts pixels, so its cells can pass ``k`` while describing one or two
patients); optionally two-sided geometric noise of a given epsilon added to every
count first. A category (a Manufacturer, model or kernel label: text the sender wrote) is
left out whole, label and all, unless it was seen in at least ``k`` series and its count
still shows after the noise: its text alone could name a patient or a site. The result
is checked against :mod:`appliance.drift.schema` before it is returned, so nothing
outside the closed envelope can leave.

Each model version also carries its field evidence per role (``field``:
:mod:`appliance.drift.evidence`): the day's cells (each counting series) suppressed and
noised like the rest; the time to result's p50 and p95 only over at
least ``k`` results; the agreement and feedback counts to date, published through
:func:`appliance.drift.evidence.ratchet` from the box's previous report of that model
version (not noised: their published steps are never under ``k``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from appliance import __version__
from appliance.config import DriftSettings
from appliance.drift import tables
from appliance.drift.aggregate import Aggregate
from appliance.drift.evidence import (
    AGREEMENT_CELLS,
    FEEDBACK_CELLS,
    SCORE_EDGES,
    RoleEvidence,
    evidence,
    ratchet,
    result_days,
)
from appliance.drift.features import feature_edges
from appliance.drift.schema import SCHEMA, check_report
from appliance.drift.service import day_aggregate


def anonymise(
    day: dt.date,
    models: Sequence[tuple[str, str, Aggregate]],
    k: int,
    epsilon: float,
    rng: np.random.Generator,
    report_id: str,
    appliance_version: str = __version__,
    field: Mapping[tuple[str, str], Sequence[RoleEvidence]] | None = None,
    previous: Mapping[tuple[str, str], dict] | None = None,
) -> dict[str, Any]:
    """Build and check the report from day aggregates (pure but for ``rng``).

    Parameters
    ----------
    models : sequence of (model_id, model_version, Aggregate)
        The day's counts per model version.
    k : int
        Smallest count shown; smaller cells become null.
    epsilon : float
        Noise level; 0 means no noise.
    field : mapping of (model_id, model_version) to RoleEvidence list, optional
        The evidence per role; none when omitted.
    previous : mapping of (model_id, model_version) to dict, optional
        The ``field`` object of the box's previous report of that model version: the
        to-date counts it published, which this one moves on from in steps of ``k``.
    """

    few = False  # the current model version's day has fewer than k series

    def noised(count: int) -> int | None:
        value = int(count)
        if epsilon > 0:
            p = 1.0 - np.exp(-epsilon)
            value += int(rng.geometric(p)) - int(rng.geometric(p))
        return value if value >= k else None

    def cell(count: int) -> int | None:
        return None if few else noised(count)

    entries = []
    for model_id, version, agg in models:
        few = agg.series < k
        edges = feature_edges(agg.kind) if agg.kind else {}
        features: dict[str, Any] = {}
        series = cell(agg.series)
        for name, counts in sorted(agg.histograms.items()):
            shown_counts = [cell(c) for c in counts]
            features[name] = {
                "kind": "histogram",
                "edges": [float(e) for e in edges[name]],
                # A histogram of series sums to the published series count: see complement().
                "counts": complement(shown_counts, series if sum(counts) == agg.series else None),
            }
        for name, tally in sorted(agg.categories.items()):
            shown = {label: cell(c) for label, c in sorted(tally.items()) if c >= k}
            features[name] = {
                "kind": "categorical",
                "counts": {label: count for label, count in shown.items() if count is not None},
            }
        entries.append(
            {
                "model_id": model_id,
                "model_version": version,
                "series": series,
                "flagged": cell(agg.flagged),
                "not_analysed": {code: cell(c) for code, c in sorted(agg.not_analysed.items())},
                "features": features,
                "field": {
                    e.role.value: _role_entry(
                        e, k, noised, ((previous or {}).get((model_id, version)) or {}).get(e.role)
                    )
                    for e in (field or {}).get((model_id, version), ())
                },
            }
        )
    report = {
        "schema": SCHEMA,
        "report_id": report_id,
        "day": day.isoformat(),
        "appliance_version": appliance_version,
        "k": k,
        "noise_epsilon": float(epsilon) if epsilon > 0 else None,
        "models": entries,
    }
    check_report(report)
    return report


def complement(cells: list[int | None], total: int | None) -> list[int | None]:
    """Cells that add up to a published ``total`` with one of them suppressed would give it
    away (the total minus the others): suppress the smallest shown cell as well, so the two
    are known only together (complementary suppression; pure)."""
    hidden = [i for i, c in enumerate(cells) if c is None]
    shown = [i for i, c in enumerate(cells) if c is not None]
    if total is None or len(hidden) != 1 or not shown:
        return cells
    smallest = min(shown, key=lambda i: (cells[i], i))
    return [None if i == smallest else c for i, c in enumerate(cells)]


def _role_entry(e: RoleEvidence, k: int, noisy: Callable[[int], int | None], before: dict | None) -> dict:
    """One role's evidence as report cells; ``noisy`` is the report's day cell (pure but for its noise)."""

    def to_date(group: str, counts: dict[str, int] | None, names: tuple[str, ...]) -> dict | None:
        if counts is None:
            return None
        published = (before or {}).get(group) or {}
        return {name: ratchet(counts[name], published.get(name), k) for name in names}

    times = np.asarray(e.times_s, dtype=float)
    shown = len(times) >= k
    scored = noisy(e.scored)
    return {
        "first_day": e.first_day.isoformat(),
        "scored": scored,
        "flagged": noisy(e.flagged),
        "not_analysed": {code: noisy(c) for code, c in e.not_analysed.items()},
        "score_histogram": {
            "edges": list(SCORE_EDGES),
            "counts": complement([noisy(c) for c in e.score_counts], scored),
        },
        "time_to_result_s": {
            "p50": round(float(np.percentile(times, 50)), 1) if shown else None,
            "p95": round(float(np.percentile(times, 95)), 1) if shown else None,
        },
        "agreement": to_date("agreement", e.agreement, AGREEMENT_CELLS),
        "feedback": to_date("feedback", e.feedback, FEEDBACK_CELLS),
    }


def daily_report(
    conn: sqlite3.Connection,
    settings: DriftSettings,
    day: dt.date,
    rng: np.random.Generator | None = None,
    *,
    model: tuple[str, str] | None = None,
    report_id: str | None = None,
    previous: Callable[[str, str], dict | None] | None = None,
) -> dict[str, Any]:
    """The report of one day from the drift tables and the results.

    Parameters
    ----------
    model : (model_id, model_version), optional
        Only this model version (the sync report queue holds one report per model version and
        day); every model version with series or results that day when omitted.
    report_id : str, optional
        A stable id (:func:`stable_report_id`); a fresh random one when omitted.
    previous : callable (model_id, model_version) -> dict or None, optional
        The ``field`` of the box's previous report of a model version, which the to-date
        counts move on from (:func:`anonymise`); from zero when omitted.
    """
    if model is None:
        known = {(m, v) for m, v, _ in tables.model_versions(conn)}
        known |= {(m, v) for m, v, d in result_days(conn, day + dt.timedelta(days=1)) if d == day}
        versions = sorted(known)
    else:
        versions = [model]
    found = {(m, v): evidence(conn, m, v, day) for m, v in versions}
    models = [(m, v, day_aggregate(conn, m, v, day)) for m, v in versions]
    models = [
        (m, v, a)
        for m, v, a in models
        if a.series or a.not_analysed or any(e.scored or e.not_analysed for e in found[(m, v)])
    ]
    return anonymise(
        day,
        models,
        settings.k,
        settings.noise_epsilon,
        rng if rng is not None else np.random.default_rng(),
        report_id or uuid.uuid4().hex,
        field=found,
        previous={(m, v): before for m, v, _ in models if previous and (before := previous(m, v)) is not None},
    )


def stable_report_id(namespace: str, day: dt.date, model_id: str, model_version: str) -> str:
    """The report id of one box's day of one model version, the same every time it is asked
    for (pure), so queueing a day twice is a no-op and the hub dedupes a resent one.

    Shaped as a uuid4 in hex, as the envelope requires; ``namespace`` (the device id the hub
    gave) keeps two boxes' reports of the same day apart.
    """
    digest = hashlib.sha256(
        "\n".join(("triage-drift-report-id/1", namespace, day.isoformat(), model_id, model_version)).encode()
    ).digest()
    return uuid.UUID(bytes=digest[:16], version=4).hex

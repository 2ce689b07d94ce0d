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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance import __version__
from appliance.config import DriftSettings
from appliance.drift import tables
from appliance.drift.aggregate import Aggregate
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
    """

    few = False  # the current model version's day has fewer than k series

    def cell(count: int) -> int | None:
        if few:
            return None
        value = int(count)
        if epsilon > 0:
            p = 1.0 - np.exp(-epsilon)
            value += int(rng.geometric(p)) - int(rng.geometric(p))
        return value if value >= k else None

    entries = []
    for model_id, version, agg in models:
        few = agg.series < k
        edges = feature_edges(agg.kind) if agg.kind else {}
        features: dict[str, Any] = {}
        for name, counts in sorted(agg.histograms.items()):
            features[name] = {
                "kind": "histogram",
                "edges": [float(e) for e in edges[name]],
                "counts": [cell(c) for c in counts],
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
                "series": cell(agg.series),
                "flagged": cell(agg.flagged),
                "not_analysed": {code: cell(c) for code, c in sorted(agg.not_analysed.items())},
                "features": features,
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


def daily_report(
    conn: sqlite3.Connection,
    settings: DriftSettings,
    day: dt.date,
    rng: np.random.Generator | None = None,
    *,
    model: tuple[str, str] | None = None,
    report_id: str | None = None,
) -> dict[str, Any]:
    """The report of one day from the drift tables.

    Parameters
    ----------
    model : (model_id, model_version), optional
        Only this model version (the sync report queue holds one report per model version and
        day); every model version with series that day when omitted.
    report_id : str, optional
        A stable id (:func:`stable_report_id`); a fresh random one when omitted.
    """
    versions = [(m, v) for m, v, _ in tables.model_versions(conn)] if model is None else [model]
    models = [(m, v, day_aggregate(conn, m, v, day)) for m, v in versions]
    models = [(m, v, a) for m, v, a in models if a.series or a.not_analysed]
    return anonymise(
        day,
        models,
        settings.k,
        settings.noise_epsilon,
        rng if rng is not None else np.random.default_rng(),
        report_id or uuid.uuid4().hex,
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

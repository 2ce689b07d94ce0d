"""The fleet page: one row per site, from the devices table and the reports they sent.

Drift alerts are computed here from the reports themselves: a feature alerts when the
population stability index between a device's latest day and its earlier days (same
model version) exceeds :data:`PSI_ALERT`. Suppressed cells (``null``, under k) count as
empty on both sides. Beside them stand the box's own alerts (its monitor judges every
series against the package reference; the check-in lists the alerting features), each
with the hub's latest PSI of that feature.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from training.hub.store import HubDatabase

PSI_ALERT = 0.25
HISTORY_DAYS = 14
_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))


def psi(expected: list, actual: list) -> float:
    """Population stability index of two count vectors (pure); 0 for identical shapes."""
    e = [c or 0 for c in expected]
    a = [c or 0 for c in actual]
    te, ta = sum(e), sum(a)
    if te == 0 or ta == 0 or len(e) != len(a):
        return 0.0
    eps = 1e-4
    total = 0.0
    for ce, ca in zip(e, a):
        pe, pa = max(ce / te, eps), max(ca / ta, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def _counts(feature: dict) -> list:
    counts = feature.get("counts")
    return list(counts.values()) if isinstance(counts, dict) else list(counts or [])


def merge_features(a: dict, b: dict) -> dict:
    """Two reports' ``features`` of one day added cell by cell (pure); a feature whose bins
    differ keeps the later report's."""
    merged = dict(a)
    for name, feature in b.items():
        earlier = merged.get(name)
        if earlier is None or earlier.get("kind") != feature.get("kind"):
            merged[name] = feature
        elif feature.get("kind") == "histogram" and earlier.get("edges") == feature.get("edges"):
            merged[name] = {**feature, "counts": [(x or 0) + (y or 0) for x, y in
                                                  zip(earlier["counts"], feature["counts"])]}
        elif feature.get("kind") == "categorical":
            counts = dict(earlier["counts"])
            for label, value in feature["counts"].items():
                counts[label] = (counts.get(label) or 0) + (value or 0)
            merged[name] = {**feature, "counts": counts}
        else:
            merged[name] = feature
    return merged


def feature_psi(baseline: dict, latest: dict) -> float | None:
    """PSI of one feature of a day against its baseline (pure): histograms bin by bin,
    categories label by label (a label one side lacks counts 0 there); None when the two
    cannot be compared (other kind, other bins)."""
    if baseline.get("kind") != latest.get("kind"):
        return None
    if latest.get("kind") == "categorical":
        labels = sorted(set(baseline["counts"]) | set(latest["counts"]))
        return psi([baseline["counts"].get(k) for k in labels], [latest["counts"].get(k) for k in labels])
    before, after = _counts(baseline), _counts(latest)
    return psi(before, after) if len(before) == len(after) else None


def drifting_features(days: list[dict]) -> list[str]:
    """Names of features whose last day drifts from the sum of the earlier days (pure).

    ``days`` is a list of ``features`` objects, oldest first.
    """
    if len(days) < 2:
        return []
    baseline: dict = {}
    for earlier in days[:-1]:
        baseline = merge_features(baseline, earlier)
    alerts = []
    for name, latest in days[-1].items():
        value = feature_psi(baseline[name], latest) if name in baseline else None
        if value is not None and value > PSI_ALERT:
            alerts.append(name)
    return sorted(alerts)


def psi_by_day(days: list[dict]) -> dict[str, list[float | None]]:
    """Per feature, each day's PSI against all the days before it (pure); ``None`` where
    there is no earlier day to compare with. ``days`` are ``features`` objects, oldest first."""
    names = sorted({name for day in days for name in day})
    series: dict[str, list[float | None]] = {name: [] for name in names}
    baseline: dict = {}
    for day in days:
        for name in names:
            feature = day.get(name)
            series[name].append(feature_psi(baseline[name], feature)
                                if feature is not None and name in baseline else None)
        baseline = merge_features(baseline, day)
    return series


def sparkline(values: list[float | None], width: int = 80, height: int = 18) -> str:
    """SVG polyline points for a series of rates in [0, 1] (pure); gaps skipped."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return ""
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - v * height:.1f}" for i, v in points)


@dataclass
class SiteRow:
    device_id: str
    site: str
    ring: str
    last_checkin_age_s: float | None
    appliance_version: str
    models: list[dict]
    #: The hub's own alerts: (label, release target), the target being the release whose
    #: reports moved (its anchor on the releases page), as the box's alerts carry.
    drift_alerts: list[tuple[str, str]] = field(default_factory=list)
    flag_rate: float | None = None
    not_analysed_rate: float | None = None
    flag_sparkline: str = ""
    feature_sparklines: list[tuple[str, str]] = field(default_factory=list)
    metadata_age_s: float | None = None
    release_error: str | None = None
    reports: int = 0
    audit_seq: int | None = None
    audit_problem: str | None = None
    #: An operator's clearing of the last problem: ``{"at", "reason", "problem"}``.
    audit_cleared: dict | None = None
    feature_psi: dict[str, float] = field(default_factory=dict)
    box_alerts: list[tuple[str, float | None, str]] | None = None  # (label, hub PSI, release target)


def release_target(model_id: str, version: str) -> str:
    """The target name the hub publishes a release under (:mod:`training.hub.repository`),
    which is also its anchor on the releases page."""
    return f"{model_id}-{version}.tar"


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def collect(db: HubDatabase, now: float) -> list[SiteRow]:
    """Everything the fleet page shows, one row per enrolled device."""
    rows = []
    for (device_id, site, ring, last_checkin, version, models, refreshed, error,
         audit_seq, box_alerts, audit_problem, audit_cleared) in db.rows(
            "SELECT device_id, site, ring, last_checkin, appliance_version, models, "
            "metadata_refreshed_at, release_error, audit_seq, drift_alerts, audit_problem, audit_cleared "
            "FROM devices ORDER BY site, device_id"):
        row = SiteRow(device_id, site, ring, now - last_checkin if last_checkin else None,
                      version or "-", json.loads(models) if models else [],
                      metadata_age_s=now - refreshed if refreshed else None, release_error=error,
                      audit_seq=audit_seq, audit_problem=audit_problem,
                      audit_cleared=json.loads(audit_cleared) if audit_cleared else None)
        per_day: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        history: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
        for day, model_id, model_version, series, flagged, not_analysed, features in db.rows(
                "SELECT day, model_id, model_version, series, flagged, not_analysed, features "
                "FROM report_models WHERE device_id = ? ORDER BY day", (device_id,)):
            totals = per_day[day]
            totals[0] += series or 0
            totals[1] += flagged or 0
            totals[2] += not_analysed or 0
            days_seen = history[(model_id, model_version)]
            days_seen[day] = merge_features(days_seen.get(day, {}), json.loads(features))
        days = sorted(per_day)[-HISTORY_DAYS:]
        series = sum(per_day[d][0] for d in days)
        row.flag_rate = _rate(sum(per_day[d][1] for d in days), series)
        row.not_analysed_rate = _rate(sum(per_day[d][2] for d in days),
                                      series + sum(per_day[d][2] for d in days))
        row.flag_sparkline = sparkline([_rate(per_day[d][1], per_day[d][0]) for d in days])
        latest_psi: dict[tuple[str, str, str], float] = {}
        for (model_id, model_version), by_day in sorted(history.items()):
            recent = [by_day[d] for d in sorted(by_day)][-HISTORY_DAYS:]
            row.drift_alerts += [(f"{model_id}: {name}", release_target(model_id, model_version))
                                 for name in drifting_features(recent)]
            for name, values in psi_by_day(recent).items():
                known = [v for v in values if v is not None]
                if known:
                    latest_psi[(model_id, model_version, name)] = known[-1]
                    row.feature_psi[f"{model_id}: {name}"] = known[-1]
                scaled = [None if v is None else min(v / (2 * PSI_ALERT), 1.0) for v in values]
                if points := sparkline(scaled):
                    row.feature_sparklines.append((f"{model_id}: {name}", points))
        if box_alerts is not None:
            row.box_alerts = [(f"{a['model_id']} {a['version']}: {a['feature']}",
                               latest_psi.get((a["model_id"], a["version"], a["feature"])),
                               release_target(a["model_id"], a["version"]))
                              for a in json.loads(box_alerts)]
        row.reports = db.one("SELECT COUNT(*) FROM reports WHERE device_id = ?", (device_id,))[0]
        rows.append(row)
    return rows


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f} %"


def figure(value: float | None) -> str:
    return "no figure" if value is None else f"{value:.2f}"


def day(epoch: float) -> str:
    """A moment as its UTC day and minute (pure)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def render(rows: list[SiteRow]) -> str:
    return _TEMPLATES.get_template("fleet.html").render(rows=rows, age=age, percent=percent, figure=figure,
                                                         psi_alert=PSI_ALERT, day=day)

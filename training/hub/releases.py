"""The release page and the promotion rule: what the field says about each release (the
one writer of ``releases`` and ``promotions``).

Per release (model id and version): the boxes that hold it in shadow and active (their
last check-in), and from the field evidence of their reports (schema 2,
:mod:`appliance.drift.evidence`) its days in shadow, its agreement with the active model,
its local PPV from the radiologists' verdicts with a Wilson interval, its flag rate against
the card's expected interval, its not-analysed rate and its time to result; and the drift
alerts the boxes raised on it.

Agreement and verdict counts are to date, so each box's latest report holds them; a
cell under k arrives as null, known only to lie in 0..k-1. The page then shows the range
such cells allow (and a Wilson interval over the worst and best cases), never a figure
that pretends to know them, and the rule judges the worst case.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from appliance.states import ModelState
from training.hub.repository import RINGS
from training.hub.store import HubDatabase

Z95 = 1.959963984540054
HISTORY_DAYS = 14
_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` in ``n`` (pure); None when ``n`` is 0."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(centre - half, 0.0), min(centre + half, 1.0)


@dataclass(frozen=True)
class Count:
    """A sum of report cells: the shown ones, and how many were null (each 0..k-1)."""

    shown: int = 0
    hidden: int = 0
    k: int = 10

    @property
    def low(self) -> int:
        return self.shown

    @property
    def high(self) -> int:
        return self.shown + self.hidden * (self.k - 1)

    def __add__(self, other: Count) -> Count:
        return Count(self.shown + other.shown, self.hidden + other.hidden, max(self.k, other.k))


def count(values: list[int | None], k: int) -> Count:
    return Count(sum(v for v in values if v is not None), sum(1 for v in values if v is None), k)


@dataclass(frozen=True)
class Proportion:
    """``yes / (yes + no)`` of cells that may be suppressed: exact when none is, else the
    range from the worst case (hidden yes at 0, hidden no at k-1) to the best."""

    yes: Count
    no: Count

    @property
    def exact(self) -> bool:
        return not (self.yes.hidden or self.no.hidden)

    @property
    def worst(self) -> float | None:
        n = self.yes.low + self.no.high
        return self.yes.low / n if n else None

    @property
    def best(self) -> float | None:
        n = self.yes.high + self.no.low
        return self.yes.high / n if n else None

    @property
    def n(self) -> int:
        return self.yes.low + self.no.low

    def interval(self) -> tuple[float, float] | None:
        """The Wilson 95 % interval, widened over what the suppressed cells allow."""
        low = wilson(self.yes.low, self.yes.low + self.no.high)
        high = wilson(self.yes.high, self.yes.high + self.no.low)
        return None if low is None or high is None else (low[0], high[1])


@dataclass
class BoxRow:
    device_id: str
    site: str
    ring: str
    state: str
    days_in_shadow: int | None = None
    latest_day: str | None = None
    agreement: Proportion | None = None
    drift_alerts: list[str] = field(default_factory=list)


@dataclass
class RoleFigures:
    """One role's figures over the boxes (last :data:`HISTORY_DAYS` report days for the rates)."""

    flag_rate: tuple[float, float] | None = None  # (low, high): equal unless a day's flagged was under k
    not_analysed_rate: float | None = None
    ttr_p50: float | None = None
    ttr_p95: float | None = None
    ppv: Proportion | None = None
    missed_findings: Count | None = None


@dataclass
class Release:
    target: str
    model_id: str
    version: str
    ring: str
    published_at: float
    expected_flag: tuple[float, float] | None
    withdrawn_at: float | None = None
    #: The card's bound on the not-analysed rate (None: the package gives none).
    expected_not_analysed: float | None = None
    boxes: list[BoxRow] = field(default_factory=list)
    agreement: Proportion | None = None
    roles: dict[str, RoleFigures] = field(default_factory=dict)
    drift_alerts: list[str] = field(default_factory=list)
    promotions: list[dict] = field(default_factory=list)

    def holding(self, state: str) -> list[BoxRow]:
        return [b for b in self.boxes if b.state == state]


def _latest(db: HubDatabase, model_id: str, version: str, role: str) -> dict[str, tuple]:
    """Each device's latest field row of this release in this role."""
    out: dict[str, tuple] = {}
    for row in db.rows(
            "SELECT device_id, day, first_day, k, both_flagged, neither_flagged, shadow_only, active_only, "
            "flag_agreed, flag_disagreed, missed_finding FROM report_field WHERE model_id = ? AND model_version = ? "
            "AND role = ? ORDER BY device_id, day", (model_id, version, role)):
        out[row[0]] = row
    return out


def _role_figures(db: HubDatabase, model_id: str, version: str, role: str) -> RoleFigures | None:
    rows = db.rows("SELECT day, k, scored, flagged, not_analysed, ttr_p50, ttr_p95 FROM report_field "
                   "WHERE model_id = ? AND model_version = ? AND role = ? ORDER BY day", (model_id, version, role))
    if not rows:
        return None
    days = sorted({r[0] for r in rows})[-HISTORY_DAYS:]
    recent = [r for r in rows if r[0] in days and r[2] is not None]
    k = max(r[1] for r in rows)
    scored = sum(r[2] for r in recent)
    flagged = count([r[3] for r in recent], k)
    figures = RoleFigures(
        flag_rate=(flagged.low / scored, min(flagged.high, scored) / scored) if scored else None,
        not_analysed_rate=(sum(r[4] for r in recent) / (scored + sum(r[4] for r in recent))) if scored else None,
        ttr_p50=statistics.median([r[5] for r in recent if r[5] is not None]) if any(
            r[5] is not None for r in recent) else None,
        ttr_p95=max((r[6] for r in recent if r[6] is not None), default=None),
    )
    latest = _latest(db, model_id, version, role).values()
    if latest:
        figures.ppv = Proportion(count([r[8] for r in latest], k), count([r[9] for r in latest], k))
        figures.missed_findings = count([r[10] for r in latest], k)
    return figures


def collect(db: HubDatabase) -> list[Release]:
    """Every published release with its field evidence, newest first."""
    devices = db.rows("SELECT device_id, site, ring, models, drift_alerts FROM devices ORDER BY site, device_id")
    releases = []
    for target, model_id, version, ring, published_at, low, high, withdrawn_at, not_analysed in db.rows(
            "SELECT target, model_id, version, ring, published_at, expected_flag_low, expected_flag_high, "
            "withdrawn_at, expected_not_analysed_high FROM releases ORDER BY published_at DESC, target"):
        release = Release(target, model_id, version, ring, published_at,
                          None if low is None or high is None else (low, high), withdrawn_at, not_analysed)
        shadow_rows = _latest(db, model_id, version, ModelState.SHADOW)
        for device_id, site, device_ring, models, alerts in devices:
            held = [m["state"] for m in json.loads(models or "[]")
                    if m["model_id"] == model_id and m["version"] == version]
            alerts_here = [a["feature"] for a in json.loads(alerts or "[]")
                           if a["model_id"] == model_id and a["version"] == version]
            release.drift_alerts += [f"{site}: {feature}" for feature in alerts_here]
            if not held and device_id not in shadow_rows:
                continue
            box = BoxRow(device_id, site, device_ring, held[0] if held else "not reported", drift_alerts=alerts_here)
            if device_id in shadow_rows:
                row = shadow_rows[device_id]
                box.latest_day = row[1]
                box.days_in_shadow = (dt.date.fromisoformat(row[1]) - dt.date.fromisoformat(row[2])).days + 1
                box.agreement = Proportion(count([row[4], row[5]], row[3]), count([row[6], row[7]], row[3]))
            release.boxes.append(box)
        agreements = [b.agreement for b in release.boxes if b.agreement is not None]
        if agreements:
            release.agreement = Proportion(sum((a.yes for a in agreements), Count()),
                                           sum((a.no for a in agreements), Count()))
        for role in (ModelState.SHADOW, ModelState.ACTIVE):
            figures = _role_figures(db, model_id, version, role)
            if figures is not None:
                release.roles[role.value] = figures
        release.promotions = [
            {"decided_at": at, "from_ring": a, "to_ring": b, "allowed": bool(ok), "checks": json.loads(checks)}
            for at, a, b, ok, checks in db.rows(
                "SELECT decided_at, from_ring, to_ring, allowed, evaluation FROM promotions WHERE target = ? "
                "ORDER BY id", (target,))]
        releases.append(release)
    return releases


def expected_flag_interval(manifest: object) -> tuple[float, float] | None:
    """The card's 95 % interval of the flag rate at the operating point's prevalence (its
    test split, first variant), or None when the package does not carry one."""
    prevalence = getattr(getattr(manifest, "operating_point", None), "prevalence", None)
    tests = (getattr(manifest, "metrics", None) or {}).get("test") or {}
    if prevalence is None or not tests:
        return None
    table = next(iter(tests.values())).get("at_prevalence") or {}
    found = (table.get(f"{prevalence:.2f}") or {}).get("flag_rate", {}).get("ci95")
    return (float(found[0]), float(found[1])) if found else None


def expected_not_analysed(manifest: object) -> float | None:
    """The upper end of the 95 % interval of the share of the card's mixed stream that a real
    appliance did not analyse, or None when the package does not carry one."""
    streams = (getattr(manifest, "metrics", None) or {}).get("mixed_stream") or {}
    found = next(iter(streams.values()), {}).get("not_analysed", {}).get("ci95") if streams else None
    return float(found[1]) if found else None


def record_release(db: HubDatabase, target: Any, manifest: Any, ring: str, min_appliance_version: str,
                   now: float) -> None:
    """A published target, with the card's expected flag-rate interval and not-analysed
    bound (once per target)."""
    expected = expected_flag_interval(manifest) or (None, None)
    db.execute("INSERT INTO releases (target, model_id, version, ring, min_appliance_version, sha256, length, "
               "published_at, expected_flag_low, expected_flag_high, expected_not_analysed_high) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (target) DO NOTHING",
               (target.path, manifest.id, manifest.version, ring, min_appliance_version,
                target.hashes["sha256"], target.length, now, *expected, expected_not_analysed(manifest)))


def withdraw(db: HubDatabase, model_id: str, version: str, now: float) -> str | None:
    """Mark a release withdrawn (boxes are told at check-in); its target name, or None if
    it is not published."""
    row = db.one("SELECT target FROM releases WHERE model_id = ? AND version = ?", (model_id, version))
    if row is None:
        return None
    db.execute("UPDATE releases SET withdrawn_at = ? WHERE target = ? AND withdrawn_at IS NULL", (now, row[0]))
    return row[0]


# The promotion rule ------------------------------------------------------------------


#: The not-analysed bound for a release whose card gives none (and no bound was set).
DEFAULT_MAX_NOT_ANALYSED = 0.05


@dataclass(frozen=True)
class Rule:
    """When a release may move to the next ring: enough boxes long enough in shadow, the
    shadow agreeing with the active model (at worst, over the suppressed cells), no drift
    alert on it, and a not-analysed rate no higher than the bound: ``max_not_analysed``
    when set, else the card's (its mixed stream's upper 95 % bound), else
    :data:`DEFAULT_MAX_NOT_ANALYSED`."""

    min_boxes: int = 3
    min_days: int = 7
    min_agreement: float = 0.95
    max_not_analysed: float | None = None

    def words(self) -> str:
        bound = (f"<= {100 * self.max_not_analysed:g} %" if self.max_not_analysed is not None else
                 f"within the card's bound (<= {100 * DEFAULT_MAX_NOT_ANALYSED:g} % where the card gives none)")
        return (f">= {self.min_boxes} boxes x >= {self.min_days} days in shadow, agreement with the active model "
                f">= {self.min_agreement:g} (at worst), no drift alert, not-analysed rate {bound}")

    def not_analysed_bound(self, release: "Release") -> tuple[float, str]:
        """The bound this release is held to, and where it comes from."""
        if self.max_not_analysed is not None:
            return self.max_not_analysed, "the bound set for this promotion"
        if release.expected_not_analysed is not None:
            return release.expected_not_analysed, "the card's mixed stream, upper 95 % bound"
        return DEFAULT_MAX_NOT_ANALYSED, "the default: the card gives no bound"


@dataclass(frozen=True)
class Check:
    name: str
    holds: bool
    says: str


def next_ring(ring: str) -> str | None:
    index = RINGS.index(ring)
    return RINGS[index + 1] if index + 1 < len(RINGS) else None


def evaluate(release: Release, rule: Rule) -> list[Check]:
    """Each condition of ``rule`` on ``release``'s evidence, in words (pure)."""
    if release.withdrawn_at is not None:
        return [Check("withdrawn", False, "the release was withdrawn")]
    in_shadow = [b for b in release.boxes if b.days_in_shadow is not None]
    long_enough = [b for b in in_shadow if b.days_in_shadow >= rule.min_days]
    listed = ", ".join(f"{b.site} {b.days_in_shadow} d" for b in in_shadow) or "none"
    checks = [Check("boxes", len(long_enough) >= rule.min_boxes,
                    f"{len(long_enough)} boxes with >= {rule.min_days} days in shadow ({listed}); "
                    f"needs {rule.min_boxes}")]
    agreement = release.agreement
    worst = agreement.worst if agreement is not None else None
    if worst is None:
        checks.append(Check("agreement", False, "no agreement counts reported yet"))
    else:
        hidden = agreement.yes.hidden + agreement.no.hidden
        caveat = f" ({hidden} cells under k counted at worst)" if hidden else ""
        checks.append(Check("agreement", worst >= rule.min_agreement,
                            f"agreement {worst:.3f} over {agreement.n} series{caveat}; needs >= {rule.min_agreement:g}"))
    checks.append(Check("drift", not release.drift_alerts,
                        "no drift alert" if not release.drift_alerts
                        else f"drift alerts: {', '.join(release.drift_alerts)}"))
    shadow = release.roles.get(ModelState.SHADOW.value)
    rate = shadow.not_analysed_rate if shadow is not None else None
    if rate is None:
        checks.append(Check("not-analysed", False, "no not-analysed rate reported yet"))
    else:
        bound, source = rule.not_analysed_bound(release)
        checks.append(Check("not-analysed", rate <= bound,
                            f"not-analysed rate {100 * rate:.1f} %; needs <= {100 * bound:.3g} % ({source})"))
    return checks


def previous_ring(ring: str) -> str | None:
    index = RINGS.index(ring)
    return RINGS[index - 1] if index > 0 else None


def record_demotion(db: HubDatabase, release: Release, to_ring: str, reason: str, now: float) -> None:
    """Keep an operator's move of a release back to an earlier ring, with the reason, beside
    the promotion decisions (an allowed move whose evaluation says ``demoted``)."""
    with db.transaction():
        number = (db.one("SELECT MAX(id) FROM promotions")[0] or 0) + 1
        db.execute("INSERT INTO promotions (id, target, from_ring, to_ring, decided_at, allowed, evaluation) "
                   "VALUES (?,?,?,?,?,?,?)", (number, release.target, release.ring, to_ring, now, 1,
                                              json.dumps({"demoted": reason, "checks": []})))
        db.execute("UPDATE releases SET ring = ? WHERE target = ?", (to_ring, release.target))


def record_promotion(db: HubDatabase, release: Release, to_ring: str, checks: list[Check], rule: Rule,
                     now: float) -> bool:
    """Keep the decision (allowed or refused, with the rule and each check); True if allowed."""
    allowed = all(c.holds for c in checks)
    evaluation = json.dumps({"rule": rule.words(),
                             "checks": [{"name": c.name, "holds": c.holds, "says": c.says} for c in checks]})
    with db.transaction():
        number = (db.one("SELECT MAX(id) FROM promotions")[0] or 0) + 1
        db.execute("INSERT INTO promotions (id, target, from_ring, to_ring, decided_at, allowed, evaluation) "
                   "VALUES (?,?,?,?,?,?,?)", (number, release.target, release.ring, to_ring, now, int(allowed),
                                              evaluation))
        if allowed:
            db.execute("UPDATE releases SET ring = ? WHERE target = ?", (to_ring, release.target))
    return allowed


# The page ----------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def share(p: Proportion | None, as_percent: bool = False) -> str:
    """A proportion as the page says it: exact, or the range its suppressed cells allow."""
    if p is None or p.worst is None:
        return "no figure"
    show = percent if as_percent else (lambda v: f"{v:.3f}")
    if p.exact:
        return show(p.worst)
    return f"{show(p.worst)} to {show(p.best)}"


def interval(p: Proportion | None) -> str:
    found = p.interval() if p is not None else None
    return "-" if found is None else f"{found[0]:.3f}-{found[1]:.3f}"


def rate(found: tuple[float, float] | None) -> str:
    if found is None:
        return "no figure"
    return percent(found[0]) if found[0] == found[1] else f"{percent(found[0])} to {percent(found[1])}"


def flag_verdict(found: tuple[float, float] | None, expected: tuple[float, float] | None) -> str:
    """Whether the field flag rate lies within the card's interval."""
    if expected is None:
        return "the card gives no interval"
    if found is None:
        return "no field figure yet"
    low, high = found
    if high < expected[0]:
        return "below the card's interval"
    if low > expected[1]:
        return "above the card's interval"
    return "within the card's interval"


def render(releases: list[Release], checks: dict[str, list[Check]], rule: Rule) -> str:
    return _TEMPLATES.get_template("releases.html").render(
        releases=releases, checks=checks, rule=rule, percent=percent, share=share, interval=interval, rate=rate,
        flag_verdict=flag_verdict, next_ring=next_ring)

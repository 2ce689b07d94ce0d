"""Judging a window against the reference, and the alert state machine (pure).

Features the package reference covers are compared with the Jensen-Shannon distance to
the reference histogram; the threshold is the package's ``mean + z * std`` of that
distance over reference sub-windows (see ``training/drift.py``), or the configured
fallback. A package threshold was drawn on sub-windows of ``window_series`` series (150
when the reference does not say); a window with fewer series varies more, so its
threshold is widened by ``sqrt(window_series / n)`` (:func:`widening`); the configured
fallback distance counts as set for windows of 150 series and is widened the same way.

Every other feature is compared with the *baseline*, the first window of this model
version that had enough series: an intensity histogram without a reference by its
Jensen-Shannon distance against the configured fallback (its counts are pixels, not
independent draws), the rest (categorical, outputs, header bins the reference lacks,
one count per series) by a chi-square test of homogeneity. ``z`` and the chi-square level both carry a
Bonferroni correction for the number of features tested in the window.

A feature alerts when ``alert_after`` of its last ``alert_of`` judged windows exceeded,
and clears when none of its last ``alert_of`` did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from appliance.config import DriftSettings
from appliance.drift.aggregate import Aggregate
from appliance.drift.features import INTENSITY, feature_edges
from appliance.drift.statistics import chi_square, js_distance, ks_binned, psi, wasserstein_binned

#: Series per reference sub-window when a package's thresholds do not say (training/drift.py).
CALIBRATION_SERIES = 150


@dataclass(frozen=True)
class Evaluation:
    """One feature judged in one window."""

    feature: str
    statistic: str  # "js_distance" (exceeds above threshold) or "chi_square_p" (below)
    value: float
    threshold: float
    exceeded: bool
    source: str  # where the threshold came from: "package", "config" or "baseline"
    details: dict[str, float] = field(default_factory=dict)


@dataclass
class FeatureState:
    history: list[bool] = field(default_factory=list)
    alerting: bool = False


@dataclass
class MonitorState:
    """What the monitor remembers per model version between windows."""

    baseline: Aggregate | None = None
    features: dict[str, FeatureState] = field(default_factory=dict)

    def alerting(self) -> list[str]:
        return sorted(name for name, f in self.features.items() if f.alerting)


@dataclass(frozen=True)
class Event:
    """An alert raised or cleared by a window."""

    kind: str  # "drift-alert" or "drift-clear"
    evaluation: Evaluation


def tail_probability(sigma: float) -> float:
    """One-sided normal tail beyond ``sigma`` (3 -> 0.00135)."""
    return NormalDist().cdf(-sigma)


def corrected_z(sigma: float, tests: int) -> float:
    """``sigma`` raised so the one-sided level is divided by ``tests`` (Bonferroni)."""
    return NormalDist().inv_cdf(1 - tail_probability(sigma) / max(tests, 1))


def widening(series: int, calibrated_on: int) -> float:
    """How much wider a package threshold is for a window of ``series`` series than for the
    ``calibrated_on`` series of the sub-windows it was drawn on (a distance's sampling noise
    shrinks as one over the square root of the count); 1 for a window at least that large."""
    return math.sqrt(calibrated_on / series) if 0 < series < calibrated_on else 1.0


def evaluate(
    window: Aggregate, reference: Mapping[str, Any] | None, baseline: Aggregate | None, settings: DriftSettings
) -> list[Evaluation]:
    """Judge every feature of ``window``.

    Parameters
    ----------
    window : Aggregate
        The window's counts.
    reference : dict, optional
        The package's drift reference: ``{"histograms": {name: {"edges", "counts"}},
        "thresholds": {name: {"statistic": "js_distance", "mean", "std"}}}``.
    baseline : Aggregate, optional
        The first full window; without it only reference features are judged.
    """
    ref_hists = dict((reference or {}).get("histograms", {}))
    thresholds = dict((reference or {}).get("thresholds", {}))
    edges = feature_edges(window.kind) if window.kind else {}
    against_reference = [
        n
        for n, c in window.histograms.items()
        if n in ref_hists and len(ref_hists[n]["counts"]) == len(c) and sum(ref_hists[n]["counts"]) > 0 and c.sum() > 0
    ]
    pixel_features = set(INTENSITY.values())
    distance_to_baseline: list[tuple[str, np.ndarray]] = []
    against_baseline: list[tuple[str, np.ndarray, np.ndarray]] = []
    if baseline is not None:
        for name, counts in window.histograms.items():
            if name in against_reference or name not in baseline.histograms:
                continue
            if name in pixel_features:  # pixel counts are not independent draws: no chi-square
                distance_to_baseline.append((name, baseline.histograms[name]))
            else:
                against_baseline.append((name, baseline.histograms[name], counts))
        base_cats = baseline.monitored_categories()
        for name, tally in window.monitored_categories().items():
            if name in base_cats:
                labels = sorted(set(tally) | set(base_cats[name]))
                against_baseline.append(
                    (
                        name,
                        np.array([base_cats[name].get(k, 0) for k in labels]),
                        np.array([tally.get(k, 0) for k in labels]),
                    )
                )
    tests = len(against_reference) + len(distance_to_baseline) + len(against_baseline)
    z = corrected_z(settings.sigma, tests)
    level = tail_probability(settings.sigma) / max(tests, 1)
    out = []
    fallback_wider = widening(window.series, CALIBRATION_SERIES)

    def fallback(details: dict[str, Any]) -> float:
        """The configured distance for this window's size (``details`` say by how much)."""
        if fallback_wider > 1:
            details.update(widened=fallback_wider, calibrated_series=float(CALIBRATION_SERIES))
        return settings.fallback_js_distance * fallback_wider

    for name in against_reference:
        ref = np.asarray(ref_hists[name]["counts"], np.float64)
        cur = window.histograms[name]
        value = js_distance(ref, cur)
        t = thresholds.get(name)
        details = {"psi": psi(ref, cur), "ks": ks_binned(ref, cur)}
        if t and t.get("statistic") == "js_distance":
            calibrated_on = int(t.get("window_series", CALIBRATION_SERIES))
            wider = widening(window.series, calibrated_on)
            threshold, source = (float(t["mean"]) + z * float(t["std"])) * wider, "package"
            if wider > 1:
                details.update(widened=wider, calibrated_series=float(calibrated_on))
        else:
            threshold, source = fallback(details), "config"
        if name in edges:
            details["wasserstein"] = wasserstein_binned(edges[name], ref, cur)
        out.append(Evaluation(name, "js_distance", value, threshold, value > threshold, source, details))
    for name, base in distance_to_baseline:
        cur = window.histograms[name]
        if base.sum() > 0 and cur.sum() > 0:
            details = {"psi": psi(base, cur), "ks": ks_binned(base, cur)}
            value, threshold = js_distance(base, cur), fallback(details)
            out.append(Evaluation(name, "js_distance", value, threshold, value > threshold, "config", details))
    for name, base, cur in against_baseline:
        if cur.sum() == 0 or base.sum() == 0:
            continue
        stat, dof, p = chi_square(base, cur)
        out.append(
            Evaluation(
                name,
                "chi_square_p",
                p,
                level,
                p < level,
                "baseline",
                {"chi_square": stat, "dof": float(dof), "js_distance": js_distance(base, cur)},
            )
        )
    for e in out:  # widened for a small window past what a distance can be: it cannot alert
        if e.statistic == "js_distance" and e.threshold >= 1.0:
            e.details["unreachable"] = True
    return out


def step(
    state: MonitorState, window: Aggregate, reference: Mapping[str, Any] | None, settings: DriftSettings
) -> tuple[list[Evaluation], list[Event]]:
    """Judge one closed window and update ``state`` in place.

    A window with fewer than ``settings.min_series`` triaged series is not judged (no
    evaluations, no change). The first judged window also becomes the baseline.
    """
    if window.series < settings.min_series:
        return [], []
    if state.baseline is None:
        state.baseline = window
    evaluations = evaluate(window, reference, state.baseline, settings)
    events = []
    for e in evaluations:
        f = state.features.setdefault(e.feature, FeatureState())
        f.history = (f.history + [e.exceeded])[-settings.alert_of :]
        if not f.alerting and sum(f.history) >= settings.alert_after:
            f.alerting = True
            events.append(Event("drift-alert", e))
        elif f.alerting and len(f.history) >= settings.alert_of and not any(f.history):
            f.alerting = False
            events.append(Event("drift-clear", e))
    return evaluations, events

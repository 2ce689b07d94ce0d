"""Metrics of a triage model on labelled series (the card is written by ``training.card``).

All statistics are pure functions of labels and scores: ROC AUC (Mann-Whitney) with a
percentile-bootstrap 95 % interval; the operating point for a target sensitivity;
sensitivity and specificity at that point with Wilson score 95 % intervals; the flag rate,
PPV and NPV at assumed prevalences; expected calibration error; Platt calibration.
Scores are per series, aggregated from per-image scores as the manifest declares.

A proportion over fewer than :data:`MIN_ESTIMABLE` cases (sensitivity of a subgroup with
fewer than 10 positives, say) is reported as *not estimable*: value and interval are
``None``, the counts stay.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import rankdata

from training.backends import Runner, run_batched
from training.data.folder import Series


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN if a class is missing."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc_ci(labels: np.ndarray, scores: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the AUC over ``n`` stratified bootstrap resamples."""
    y, s = np.asarray(labels), np.asarray(scores)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        aucs.append(roc_auc(y[idx], s[idx]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def threshold_for_sensitivity(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    """Operating point (score >= t is positive) with sensitivity >= ``target``.

    Takes the highest threshold reaching the target (best specificity), then lowers it to
    halfway to the next negative score below, which keeps that specificity and adds any
    sensitivity it can.
    """
    y, s = np.asarray(labels) == 1, np.asarray(scores, dtype=np.float64)
    pos = np.sort(s[y])
    if len(pos) == 0:
        raise ValueError("no positives to choose an operating point on")
    t = pos[int(np.floor((1 - target) * len(pos) + 1e-9))]
    below = s[~y][s[~y] < t]
    lower = float(below.max()) if below.size else 0.0
    return float((lower + s[s > lower].min()) / 2)


def sensitivity_specificity(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold``; NaN where a class is missing."""
    y, pred = np.asarray(labels) == 1, np.asarray(scores) >= threshold
    sens = float(pred[y].mean()) if y.any() else float("nan")
    spec = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return sens, spec


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE over ``bins`` equal-width probability bins (weighted mean |accuracy - confidence|)."""
    y, p = np.asarray(labels, dtype=np.float64), np.clip(np.asarray(probs, dtype=np.float64), 0, 1)
    which = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def series_scores(runner: Runner, series: list[Series], aggregate: Callable[[np.ndarray], float]) -> np.ndarray:
    """One aggregated score per series."""
    return np.array([aggregate(run_batched(runner, s.model_inputs())[0]) for s in series])


#: z of a two-sided 95 % interval.
Z95 = 1.959963984540054
#: Fewer positives (or negatives) than this and sensitivity (or specificity) is not estimable.
MIN_ESTIMABLE = 10
#: Prevalences at which flag rate, PPV and NPV are reported.
PREVALENCES = (0.05, 0.10)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n``; NaNs when ``n`` is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def proportion(k: int, n: int, minimum: int = MIN_ESTIMABLE) -> dict:
    """``{"k", "n", "value", "ci95", "estimable"}``; value and interval ``None`` below ``minimum`` cases."""
    estimable = n >= minimum
    return {"k": int(k), "n": int(n), "estimable": estimable,
            "value": k / n if estimable else None, "ci95": list(wilson_interval(k, n)) if estimable else None}


def at_prevalence(sens: float, spec: float, prevalence: float) -> dict[str, float]:
    """Flag rate, PPV and NPV of a test with ``sens``/``spec`` in a population at ``prevalence``."""
    flagged = sens * prevalence + (1 - spec) * (1 - prevalence)
    ppv = sens * prevalence / flagged if flagged > 0 else float("nan")
    unflagged = 1 - flagged
    npv = spec * (1 - prevalence) / unflagged if unflagged > 0 else float("nan")
    return {"flag_rate": flagged, "ppv": ppv, "npv": npv}


def prevalence_table(sensitivity: dict, specificity: dict, prevalences=PREVALENCES) -> dict[str, dict] | None:
    """Flag rate, PPV, NPV at each prevalence with 95 % intervals, or ``None`` if not estimable.

    Intervals propagate the Wilson bounds of sensitivity and specificity through the
    formulas, which are monotone in both: PPV and NPV rise with each, the flag rate rises
    with sensitivity and falls with specificity. Taking both bounds together makes the
    interval conservative (wider than a joint 95 % interval).
    """
    if not (sensitivity["estimable"] and specificity["estimable"]):
        return None
    (se, (se_lo, se_hi)), (sp, (sp_lo, sp_hi)) = (
        (sensitivity["value"], sensitivity["ci95"]), (specificity["value"], specificity["ci95"]))
    out = {}
    for p in prevalences:
        point, low, high = at_prevalence(se, sp, p), at_prevalence(se_lo, sp_lo, p), at_prevalence(se_hi, sp_hi, p)
        flag_lo, flag_hi = at_prevalence(se_lo, sp_hi, p)["flag_rate"], at_prevalence(se_hi, sp_lo, p)["flag_rate"]
        out[f"{p:.2f}"] = {
            "flag_rate": {"value": point["flag_rate"], "ci95": [flag_lo, flag_hi]},
            "ppv": {"value": point["ppv"], "ci95": [low["ppv"], high["ppv"]]},
            "npv": {"value": point["npv"], "ci95": [low["npv"], high["npv"]]},
        }
    return out


def operating_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """Everything reported at one operating point for one set of series (pure).

    Returns a JSON-able dict: counts (``n``, ``positives``, ``tp``, ``fn``, ``tn``,
    ``fp``); ``sensitivity``, ``specificity`` and the observed ``flag_rate`` as
    :func:`proportion` dicts (Wilson intervals); ``at_prevalence`` (:func:`prevalence_table`);
    ``auc`` and ``auc_ci95`` (bootstrap; ``None`` when either class has fewer than
    :data:`MIN_ESTIMABLE` series); ``ece``.
    """
    y = np.asarray(labels).astype(int) == 1
    s = np.asarray(scores, dtype=np.float64)
    flag = s >= threshold
    tp, fn = int((flag & y).sum()), int((~flag & y).sum())
    tn, fp = int((~flag & ~y).sum()), int((flag & ~y).sum())
    sens, spec = proportion(tp, tp + fn), proportion(tn, tn + fp)
    auc_ok = sens["estimable"] and spec["estimable"]
    lo, hi = bootstrap_auc_ci(y, s, seed=seed) if auc_ok else (None, None)
    return {
        "n": int(len(y)), "positives": int(y.sum()), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "threshold": float(threshold), "sensitivity": sens, "specificity": spec,
        "flag_rate": proportion(int(flag.sum()), int(len(y)), minimum=1),
        "at_prevalence": prevalence_table(sens, spec),
        "auc": roc_auc(y, s) if auc_ok else None, "auc_ci95": [lo, hi] if auc_ok else None,
        "ece": expected_calibration_error(y, s) if len(y) else None,
    }


#: Label attributes reported as subgroups, in card order (absent ones are skipped).
SUBGROUP_ATTRIBUTES = ("lesion_type", "size_bucket", "contrast", "mimic", "acquisition")
_NO_VALUE = ("", "none")


def subgroup_metrics(series: list[Series], scores: np.ndarray, threshold: float) -> dict[str, dict[str, dict]]:
    """Operating-point metrics per scanner style and per label attribute (pure).

    ``scanner`` and attributes that negatives carry too (``mimic``, ``acquisition``): each
    value's own series. Attributes only positives carry (``lesion_type``, ``size_bucket``,
    ``contrast``; negatives have ``none``): that value's positives against all negatives,
    so its specificity is the split's.
    """
    y = np.array([s.label for s in series])
    out: dict[str, dict[str, dict]] = {"scanner": {}}
    for scanner in sorted({s.scanner for s in series}):
        m = np.array([s.scanner == scanner for s in series])
        out["scanner"][scanner] = operating_metrics(y[m], scores[m], threshold)
    for attr in SUBGROUP_ATTRIBUTES:
        values = [s.attributes.get(attr, "") for s in series]
        if all(v == "" for v in values):
            continue
        positive_only = all(v in _NO_VALUE for v, s in zip(values, series) if s.label == 0)
        out[attr] = {}
        for value in sorted(set(values) - set(_NO_VALUE) if positive_only else set(values) - {""}):
            m = np.array([(positive_only and s.label == 0) or v == value for v, s in zip(values, series)])
            out[attr][value] = operating_metrics(y[m], scores[m], threshold)
    return out


def variant_agreement(reference_flags: np.ndarray, variant_flags: np.ndarray, labels: np.ndarray) -> dict:
    """Flag agreement of a variant with the reference (FP32) on the same series (pure).

    ``agreement``: fraction of series flagged alike; ``lost_positives``: positives the
    reference flags and the variant does not; ``gained``: series the variant flags and the
    reference does not.
    """
    ref, var, y = (np.asarray(a).astype(bool) for a in (reference_flags, variant_flags, labels))
    return {"n": int(len(ref)), "agreement": float((ref == var).mean()) if len(ref) else float("nan"),
            "lost_positives": int((ref & ~var & y).sum()), "lost": int((ref & ~var).sum()),
            "gained": int((~ref & var).sum())}


#: Bounds of the Platt slope: positive (calibration never reverses the ranking) and finite
#: (a model whose scores barely spread would otherwise get a slope of 1e10).
PLATT_SLOPE_RANGE = (1e-3, 50.0)
#: Ridge on (a, b) that keeps the fit finite on separable splits.
PLATT_RIDGE = 1e-3


def platt_fit(labels: np.ndarray, scores: np.ndarray, iterations: int = 200) -> tuple[float, float]:
    """Platt scaling ``p = sigmoid(a * logit(score) + b)`` fitted on held-out series (pure).

    Minimises the log loss against Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and
    ``1 / (N- + 2)`` plus a small ridge (:data:`PLATT_RIDGE`) by damped Newton steps (each
    step halved until the loss falls), the slope kept in :data:`PLATT_SLOPE_RANGE`.
    """
    y = np.asarray(labels).astype(bool)
    x = _logit(np.asarray(scores, dtype=np.float64))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("Platt scaling needs positives and negatives")
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0, z) - t * z) + PLATT_RIDGE / 2 * (a * a + b * b))

    lo, hi = PLATT_SLOPE_RANGE
    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(a * x + b)))
        w = p * (1 - p)
        g = np.array([np.sum((p - t) * x) + PLATT_RIDGE * a, np.sum(p - t) + PLATT_RIDGE * b])
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + PLATT_RIDGE * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-8:
            na, nb = float(np.clip(a - scale * step[0], lo, hi)), float(b - scale * step[1])
            new = loss(na, nb)
            if new <= current:
                break
            scale /= 2
        else:
            break
        moved = max(abs(na - a), abs(nb - b))
        a, b, current = na, nb, new
        if moved < 1e-10:
            break
    return a, b


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))

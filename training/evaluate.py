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
from training.indication import Indication


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
#: Prevalences (of in-indication findings) at which flag rate, PPV and flags per true
#: positive are reported.
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
    estimable = n >= minimum and n > 0
    return {"k": int(k), "n": int(n), "estimable": estimable,
            "value": k / n if estimable else None, "ci95": list(wilson_interval(k, n)) if estimable else None}


def at_prevalence(sens: float, spec: float, prevalence: float) -> dict[str, float]:
    """Flag rate, PPV and flags per true positive of a test with ``sens``/``spec`` in a
    population where ``prevalence`` of the series hold an in-indication finding."""
    flagged = sens * prevalence + (1 - spec) * (1 - prevalence)
    true = sens * prevalence
    return {"flag_rate": flagged, "ppv": true / flagged if flagged > 0 else float("nan"),
            "flags_per_true_positive": flagged / true if true > 0 else float("inf")}


def prevalence_table(sensitivity: dict, specificity: dict, prevalences=PREVALENCES) -> dict[str, dict] | None:
    """Flag rate, PPV and flags per true positive at each prevalence with 95 % intervals, or
    ``None`` if not estimable.

    Intervals propagate the Wilson bounds of sensitivity and specificity through the
    formulas, which are monotone in both: PPV rises with each (flags per true positive, its
    inverse, falls), the flag rate rises with sensitivity and falls with specificity. Taking
    both bounds together makes the interval conservative (wider than a joint 95 % interval).
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
            "flags_per_true_positive": {"value": point["flags_per_true_positive"],
                                        "ci95": [high["flags_per_true_positive"], low["flags_per_true_positive"]]},
        }
    return out


def _classes(classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(classes).astype(str)
    unknown = set(c) - {i.value for i in Indication}
    if unknown:
        raise ValueError(f"unknown indication classes {sorted(unknown)}")
    return c == Indication.IN, c == Indication.NEGATIVE, c == Indication.SUB


def operating_metrics(classes, scores: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """Everything reported at one operating point for one set of series (pure).

    ``classes`` are :class:`training.indication.Indication` values per series.
    Sensitivity counts in-indication series, specificity negatives; flags on
    sub-indication series are their own proportion, never in either.

    Returns a JSON-able dict: counts (``n``, ``in_indication``, ``negatives``,
    ``sub_indication``, ``tp``, ``fn``, ``tn``, ``fp``, ``sub_flagged``); ``sensitivity``,
    ``specificity``, ``sub_indication_flags`` and the observed ``flag_rate`` as
    :func:`proportion` dicts (Wilson intervals); ``at_prevalence``
    (:func:`prevalence_table`); ``auc`` and ``auc_ci95`` (in-indication against negatives,
    bootstrap; ``None`` when either has fewer than :data:`MIN_ESTIMABLE` series); ``ece``
    (the same series, in-indication as 1).
    """
    inside, negative, sub = _classes(classes)
    s = np.asarray(scores, dtype=np.float64)
    flag = s >= threshold
    tp, fn = int((flag & inside).sum()), int((~flag & inside).sum())
    tn, fp = int((~flag & negative).sum()), int((flag & negative).sum())
    sens, spec = proportion(tp, tp + fn), proportion(tn, tn + fp)
    scored = inside | negative
    auc_ok = sens["estimable"] and spec["estimable"]
    lo, hi = bootstrap_auc_ci(inside[scored], s[scored], seed=seed) if auc_ok else (None, None)
    return {
        "n": int(len(s)), "in_indication": int(inside.sum()), "negatives": int(negative.sum()),
        "sub_indication": int(sub.sum()), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "sub_flagged": int((flag & sub).sum()), "threshold": float(threshold),
        "sensitivity": sens, "specificity": spec,
        "sub_indication_flags": proportion(int((flag & sub).sum()), int(sub.sum()), minimum=1),
        "flag_rate": proportion(int(flag.sum()), int(len(s)), minimum=1),
        "at_prevalence": prevalence_table(sens, spec),
        "auc": roc_auc(inside[scored], s[scored]) if auc_ok else None, "auc_ci95": [lo, hi] if auc_ok else None,
        "ece": expected_calibration_error(inside[scored], s[scored]) if scored.any() else None,
    }


def choose_operating_point(classes, scores: np.ndarray, target_sensitivity: float, target_specificity: float,
                           max_flag_rate: float, prevalence: float) -> dict:
    """The threshold for a workload, chosen on the calibration split (pure).

    Sensitivity (in-indication) must reach ``target_sensitivity``, which holds for every
    threshold up to ``t_sensitivity`` (the highest such); the flag rate at ``prevalence``
    (:func:`at_prevalence` from the split's sensitivity and specificity) must stay at or
    under ``max_flag_rate``, which holds from ``t_flag_rate`` up (the lowest such). When
    both hold somewhere (``t_flag_rate <= t_sensitivity``) the threshold is the one in that
    range whose smaller margin over the targets, ``min(sensitivity - target_sensitivity,
    specificity - target_specificity)``, is largest: the split's spare cases go to
    whichever target has fewer, counted in the units the targets are stated in. Sensitivity
    falls and specificity rises with the threshold, so the best thresholds form one range;
    the threshold is its midpoint in logit units, as far from its edges as the split allows.
    Otherwise it is ``t_sensitivity`` (sensitivity first) and ``meets_both`` is false: the
    build says so and the card leads with it. Thresholds sit halfway between neighbouring
    scores, never on one.
    """
    inside, negative, _ = _classes(classes)
    s = np.asarray(scores, dtype=np.float64)
    if not inside.any() or not negative.any():
        raise ValueError("an operating point needs in-indication and negative series")
    cuts = np.unique(s[inside | negative])
    candidates = np.concatenate([[cuts[0] / 2], (cuts[:-1] + cuts[1:]) / 2, [(cuts[-1] + 1) / 2]])

    def figures(t: float) -> tuple[float, float, float]:
        sens, spec = float((s[inside] >= t).mean()), float((s[negative] < t).mean())
        return sens, spec, at_prevalence(sens, spec, prevalence)["flag_rate"]

    table = [(float(t), *figures(t)) for t in candidates]
    t_sens = max(t for t, sens, _, _ in table if sens >= target_sensitivity - 1e-12)
    feasible = [t for t, _, _, rate in table if rate <= max_flag_rate + 1e-12]
    t_flag = min(feasible) if feasible else None
    meets_both = t_flag is not None and t_flag <= t_sens
    if meets_both:
        margins = [(t, min(sens - target_sensitivity, spec - target_specificity))
                   for t, sens, spec, _ in table if t_flag <= t <= t_sens]
        best = max(m for _, m in margins)
        best_range = [t for t, m in margins if m >= best - 1e-12]
        threshold = float(_sigmoid((_logit(np.array(min(best_range))) + _logit(np.array(max(best_range)))) / 2))
    else:
        threshold = t_sens
    sens, spec, rate = figures(threshold)
    return {"threshold": threshold, "meets_both": bool(meets_both), "target_sensitivity": target_sensitivity,
            "target_specificity": target_specificity, "max_flag_rate": max_flag_rate, "prevalence": prevalence,
            "threshold_for_sensitivity": t_sens, "threshold_for_flag_rate": t_flag, "sensitivity": sens,
            "specificity": spec, "flag_rate_at_prevalence": rate, "chosen_on": "calibration split",
            "rule": "largest smaller margin over the sensitivity and specificity targets"}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


#: Label attributes reported as subgroups, in card order (absent ones are skipped).
SUBGROUP_ATTRIBUTES = ("lesion_type", "size_group", "contrast", "mimic", "acquisition", "scanner")
_NO_VALUE = ("", "none")


def subgroup_metrics(classes, attributes: list[dict[str, str]], scores: np.ndarray, threshold: float,
                     columns: tuple[str, ...] = SUBGROUP_ATTRIBUTES) -> dict[str, dict[str, dict]]:
    """Per value of each label attribute: in-indication sensitivity, specificity and
    sub-indication flags among that value's own series (pure).

    Attributes only findings carry (``lesion_type``, ``size_group``, ``contrast``;
    negatives have ``none``) get no specificity: a negative has no lesion type, and a flag
    rate over a mix of positives and negatives would be neither figure.
    """
    inside, negative, sub = _classes(classes)
    flag = np.asarray(scores, dtype=np.float64) >= threshold
    out: dict[str, dict[str, dict]] = {}
    for attr in columns:
        values = np.array([a.get(attr, "") for a in attributes])
        if (values == "").all():
            continue
        finding_only = all(v in _NO_VALUE for v in values[negative])
        out[attr] = {}
        for value in sorted(set(values) - set(_NO_VALUE)):
            m = values == value
            out[attr][value] = {
                "sensitivity": proportion(int((flag & inside & m).sum()), int((inside & m).sum())),
                "specificity": None if finding_only else proportion(int((~flag & negative & m).sum()), int((negative & m).sum())),
                "sub_indication_flags": proportion(int((flag & sub & m).sum()), int((sub & m).sum()), minimum=1),
            }
    return out


def flip_share(flags: np.ndarray, perturbed_flags: np.ndarray) -> dict:
    """Share of series whose flag changed under a perturbation (:func:`proportion`)."""
    a, b = np.asarray(flags, bool), np.asarray(perturbed_flags, bool)
    return proportion(int((a != b).sum()), len(a), minimum=1)


def variant_agreement(reference_flags: np.ndarray, variant_flags: np.ndarray, labels: np.ndarray) -> dict:
    """Flag agreement of a variant with the reference (FP32) on the same series (pure).

    ``agreement``: fraction of series flagged alike; ``lost_positives``: series with a
    finding (``labels`` 1) the reference flags and the variant does not; ``gained``: series
    the variant flags and the reference does not.
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

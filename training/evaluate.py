"""Metrics of a triage model on labelled series, and the model card they go into.

All statistics are pure functions of labels and scores: ROC AUC (Mann-Whitney) with a
percentile-bootstrap 95 % interval, the operating point chosen on validation for a target
sensitivity, sensitivity/specificity at that point, and expected calibration error.
Scores are per series, aggregated from per-image scores as the manifest declares.
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
    return np.array([aggregate(run_batched(runner, s.inputs)[0]) for s in series])


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """AUC with 95 % CI, sensitivity/specificity at ``threshold``, ECE and counts."""
    lo, hi = bootstrap_auc_ci(labels, scores, seed=seed)
    sens, spec = sensitivity_specificity(labels, scores, threshold)
    return {
        "n": int(len(labels)), "positives": int(np.sum(labels)), "auc": roc_auc(labels, scores),
        "auc_ci95": [lo, hi], "sensitivity": sens, "specificity": spec,
        "ece": expected_calibration_error(labels, scores),
    }


def subgroup_metrics(series: list[Series], scores: np.ndarray, threshold: float) -> dict:
    """Metrics per scanner (its own series) and per size bucket (its positives vs all negatives)."""
    y = np.array([s.label for s in series])
    out: dict[str, dict] = {"scanner": {}, "size_bucket": {}}
    for scanner in sorted({s.scanner for s in series}):
        m = np.array([s.scanner == scanner for s in series])
        out["scanner"][scanner] = metrics(y[m], scores[m], threshold)
    buckets = sorted({s.attributes.get("size_bucket", "") for s in series if s.label == 1} - {"", "none"})
    for bucket in buckets:
        m = np.array([s.label == 0 or s.attributes.get("size_bucket") == bucket for s in series])
        out["size_bucket"][bucket] = metrics(y[m], scores[m], threshold)
    return out


def _fmt(m: dict) -> str:
    lo, hi = m["auc_ci95"]
    return (f"| {m['n']} | {m['positives']} | {m['auc']:.3f} ({lo:.3f}-{hi:.3f}) | "
            f"{m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['ece']:.3f} |")


def model_card(info: dict) -> str:
    """The model card (Markdown) from a build's ``info`` dict (see ``training.demo``)."""
    head = "| group | series | positives | ROC AUC (95% CI) | sensitivity | specificity | ECE |\n|---|---|---|---|---|---|---|"
    rows = [f"| all (test) {_fmt(info['test'])}"]
    for kind, groups in info["subgroups"].items():
        for name, m in groups.items():
            rows.append(f"| {kind}: {name} {_fmt(m)}")
    variants = "\n".join(
        f"| {v['backend']} | {v['precision']} | {v['test_auc']:.4f} | {v['auc_vs_fp32'] + 0.0:+.4f} | {v['status']} |"
        for v in info["variants"])
    op = info["operating_point"]
    return f"""# Model card: {info['id']} {info['version']}

**NOT FOR DIAGNOSTIC USE.** A demonstration model trained only on synthetic phantoms
generated by `training.data`; it has never seen a real patient image.

## Intended use
{info['intended_use']}

## Model
- Architecture: `TriageNet` (plain torch; {info['parameters']:,} parameters), input
  {info['input_desc']}; outputs `score` (sigmoid probability, shape N) and `cam`
  (class-activation map, logit units, {info['cam_size']}x{info['cam_size']}).
- Series score: {info['aggregation_desc']}.
- Operating point: score >= {op['threshold']:.4f}, chosen on the validation split for
  sensitivity >= {op['target_sensitivity']:.2f} (validation sensitivity {op['validation_sensitivity']:.3f},
  specificity {op['validation_specificity']:.3f}).

## Data
{info['data_desc']}

Split by patient (seed {info['seed']}): {info['split_counts']}.

## Training
Seed {info['seed']}, {info['epochs_run']} epochs (early stopping on validation loss, best epoch
{info['best_epoch']}), {info['train_seconds']:.0f} s on {info['machine']}.
Rebuild: `{info['command']}`.

## Metrics (held-out synthetic test split, FP32 ONNX Runtime)
Per size bucket: that bucket's positives against all negatives. ECE: 10 equal-width bins
on the series score.

{head}
{chr(10).join(rows)}

## Backends and precisions
INT8 variants are kept only when their test AUC is within 0.005 of FP32.

| backend | precision | test AUC | vs FP32 | status |
|---|---|---|---|---|
{variants}

## Limits
- Synthetic data only: real scanners, patients, artefacts, post-operative changes,
  calcifications and mimics are absent; performance on real studies is unknown.
- {info['limits']}
- Scores are not calibrated probabilities of disease (training rebalances classes and the
  series score is {info['aggregation']['method']}-aggregated); see the ECE above.
- Not for diagnostic use; a triage aid prototype only.
"""

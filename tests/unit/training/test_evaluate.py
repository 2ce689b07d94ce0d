import itertools

import numpy as np
import pytest

from training.evaluate import (bootstrap_auc_ci, expected_calibration_error, roc_auc, sensitivity_specificity,
                               threshold_for_sensitivity)


def brute_auc(y, s):
    pairs = [(p, n) for p, n in itertools.product(s[y == 1], s[y == 0])]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60) + 0.4 * y, 1)  # rounding creates ties
    assert roc_auc(y, s) == pytest.approx(brute_auc(y, s))
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_bootstrap_interval_brackets_the_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.5 * y
    lo, hi = bootstrap_auc_ci(y, s, n=300)
    assert lo < roc_auc(y, s) < hi and hi - lo < 0.2


def test_threshold_reaches_target_sensitivity_at_the_best_specificity():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.3 * y
    t = threshold_for_sensitivity(y, s, 0.95)
    sens, spec = sensitivity_specificity(y, s, t)
    assert sens >= 0.95 and 0 < spec < 1
    strict = np.sort(s[y == 1])[int(np.floor(0.05 * (y == 1).sum()))]  # highest threshold meeting the target
    assert t <= strict and spec == sensitivity_specificity(y, s, strict)[1]
    assert sensitivity_specificity(y, s, np.nextafter(strict, 2))[0] < 0.95


def test_threshold_sits_between_the_classes_when_they_separate():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    assert threshold_for_sensitivity(y, s, 0.95) == pytest.approx(0.45)


def test_ece_zero_when_calibrated_and_known_value_otherwise():
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    assert expected_calibration_error([1, 1], [0.15, 0.15]) == pytest.approx(0.85)

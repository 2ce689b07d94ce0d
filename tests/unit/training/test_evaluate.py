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


# --- operating-point statistics (issue 9): values computed by hand ---------------------

from appliance.models.manifest import Calibration  # noqa: E402
from training.card import fmt_proportion  # noqa: E402
from training.evaluate import (at_prevalence, operating_metrics, platt_fit, prevalence_table, proportion,  # noqa: E402
                               subgroup_metrics, variant_agreement, wilson_interval)


def test_wilson_interval_matches_hand_computed_values():
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38415 = 0.71679, half 0.20592 -> 0.4902-0.9433
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    # 0/20: lower bound 0, upper z^2 / (n + z^2) = 3.8415 / 23.8415 = 0.16113
    assert wilson_interval(0, 20) == (0.0, pytest.approx(0.16113, abs=1e-4))
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] == pytest.approx(1 - 0.16113, abs=1e-4)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_fewer_than_ten_cases_are_not_estimable_and_say_so():
    small = proportion(4, 4)
    assert small == {"k": 4, "n": 4, "estimable": False, "value": None, "ci95": None}
    assert fmt_proportion(small) == "not estimable (4/4; < 10 cases)"
    ten = proportion(9, 10)
    assert ten["estimable"] and ten["value"] == 0.9
    assert fmt_proportion(ten).startswith("0.900 (0.596-0.982) 9/10")


def test_ppv_npv_and_flag_rate_at_prevalence_by_hand():
    # sens 0.9, spec 0.8, prevalence 0.1: flagged 0.09 + 0.18 = 0.27, PPV 0.09/0.27, NPV 0.72/0.73
    v = at_prevalence(0.9, 0.8, 0.10)
    assert v["flag_rate"] == pytest.approx(0.27)
    assert v["ppv"] == pytest.approx(1 / 3) and v["npv"] == pytest.approx(0.72 / 0.73)
    table = prevalence_table(proportion(18, 20), proportion(80, 100))
    row = table["0.10"]
    assert row["ppv"]["value"] == pytest.approx(1 / 3)
    lo_se, hi_se = wilson_interval(18, 20)
    lo_sp, hi_sp = wilson_interval(80, 100)
    assert row["ppv"]["ci95"] == [pytest.approx(at_prevalence(lo_se, lo_sp, 0.1)["ppv"]),
                                  pytest.approx(at_prevalence(hi_se, hi_sp, 0.1)["ppv"])]
    assert row["flag_rate"]["ci95"][0] == pytest.approx(at_prevalence(lo_se, hi_sp, 0.1)["flag_rate"])
    assert row["flag_rate"]["ci95"][0] < 0.27 < row["flag_rate"]["ci95"][1]
    assert set(table) == {"0.05", "0.10"}
    assert prevalence_table(proportion(4, 4), proportion(80, 100)) is None


def test_operating_metrics_counts_and_intervals():
    y = np.array([1] * 12 + [0] * 20)
    s = np.array([0.9] * 10 + [0.1] * 2 + [0.8] * 3 + [0.2] * 17)
    m = operating_metrics(y, s, 0.5)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (10, 2, 17, 3)
    assert m["sensitivity"]["value"] == pytest.approx(10 / 12)
    assert m["sensitivity"]["ci95"] == list(wilson_interval(10, 12))
    assert m["specificity"]["value"] == pytest.approx(17 / 20)
    assert m["flag_rate"]["value"] == pytest.approx(13 / 32)
    assert m["auc"] == pytest.approx(roc_auc(y, s)) and m["at_prevalence"]["0.05"]["ppv"]["value"] > 0
    few = operating_metrics(y[8:], s[8:], 0.5)  # 4 positives
    assert few["sensitivity"]["estimable"] is False and few["auc"] is None and few["at_prevalence"] is None


class _S:
    def __init__(self, label, scanner, **attributes):
        self.label, self.scanner, self.attributes = label, scanner, attributes


def test_subgroups_by_attribute_use_positives_against_all_negatives_and_mimics_their_own_series():
    series = [_S(1, "A", lesion_type="subdural", mimic="none"), _S(1, "B", lesion_type="intraparenchymal", mimic="none"),
              _S(0, "A", lesion_type="none", mimic="calcification"), _S(0, "B", lesion_type="none", mimic="none")]
    scores = np.array([0.9, 0.2, 0.7, 0.1])
    out = subgroup_metrics(series, scores, 0.5)
    assert set(out) == {"scanner", "lesion_type", "mimic"}
    sub = out["lesion_type"]["subdural"]
    assert (sub["n"], sub["positives"], sub["tp"], sub["fp"]) == (3, 1, 1, 1)
    calc = out["mimic"]["calcification"]
    assert (calc["n"], calc["positives"], calc["fp"]) == (1, 0, 1)
    assert out["mimic"]["none"]["n"] == 3 and out["scanner"]["B"]["n"] == 2


def test_variant_agreement_counts_lost_positives():
    ref = np.array([1, 1, 0, 0, 1], bool)
    var = np.array([1, 0, 0, 1, 1], bool)
    y = np.array([1, 1, 0, 0, 0])
    g = variant_agreement(ref, var, y)
    assert g == {"n": 5, "agreement": 0.6, "lost_positives": 1, "lost": 1, "gained": 1}


def test_platt_calibration_fits_a_known_logistic_and_applies_like_the_box():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, 4000)
    p_true = 1 / (1 + np.exp(-(0.5 * x - 1.0)))
    y = (rng.random(4000) < p_true).astype(int)
    raw = 1 / (1 + np.exp(-x))  # the model's score: logit(raw) = x
    a, b = platt_fit(y, raw)
    assert a == pytest.approx(0.5, abs=0.08) and b == pytest.approx(-1.0, abs=0.12)
    cal = Calibration(method="platt", a=a, b=b)
    assert cal.apply(0.5) == pytest.approx(1 / (1 + np.exp(-b)))
    assert cal.apply(0.9) > cal.apply(0.5) > cal.apply(0.1)
    # a split ranked backwards still gives an increasing map
    a_rev, _ = platt_fit([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])
    assert a_rev > 0


def test_card_lists_the_input_constraints_the_manifest_carries():
    from training.card import constraints_text

    text = constraints_text({"slice_thickness_mm": {"min": 3.0, "max": 5.0}, "rows": {"min": 256, "max": None},
                             "excluded_image_types": [["LOCALIZER"], ["DERIVED", "SECONDARY"]], "required_tags": [],
                             "patient_age_years": {"min": 18, "max": 89}, "view_positions": ["PA"], "contrast": "none"})
    assert text.splitlines() == ["- `slice_thickness_mm`: 3-5", "- `rows`: >= 256",
                                 "- `excluded_image_types`: LOCALIZER, DERIVED + SECONDARY",
                                 "- `patient_age_years`: 18-89", "- `view_positions`: PA", "- `contrast`: none"]
    assert "no input constraints" in constraints_text(None)

import itertools

import numpy as np
import pytest

from training.evaluate import bootstrap_auc_ci, expected_calibration_error, roc_auc


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


def test_ece_zero_when_calibrated_and_known_value_otherwise():
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    assert expected_calibration_error([1, 1], [0.15, 0.15]) == pytest.approx(0.85)


# --- operating-point statistics (issue 9): values computed by hand ---------------------

from appliance.models.manifest import Calibration  # noqa: E402
from training.card import fmt_proportion  # noqa: E402
from training.evaluate import (at_prevalence, choose_operating_point, flip_share, operating_metrics,  # noqa: E402
                               platt_fit, prevalence_table, proportion, subgroup_metrics, variant_agreement,
                               wilson_interval)

IN, NEG, SUB = "in-indication", "negative", "sub-indication"


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


def test_ppv_flag_rate_and_flags_per_true_positive_at_prevalence_by_hand():
    # sens 0.9, spec 0.8, prevalence 0.1: flagged 0.09 + 0.18 = 0.27, PPV 0.09/0.27, 3 flags per true positive
    v = at_prevalence(0.9, 0.8, 0.10)
    assert v["flag_rate"] == pytest.approx(0.27)
    assert v["ppv"] == pytest.approx(1 / 3) and v["flags_per_true_positive"] == pytest.approx(3.0)
    assert "npv" not in v  # a triage flag is no rule-out: no NPV is reported
    table = prevalence_table(proportion(18, 20), proportion(80, 100))
    row = table["0.10"]
    assert row["ppv"]["value"] == pytest.approx(1 / 3)
    lo_se, hi_se = wilson_interval(18, 20)
    lo_sp, hi_sp = wilson_interval(80, 100)
    assert row["ppv"]["ci95"] == [pytest.approx(at_prevalence(lo_se, lo_sp, 0.1)["ppv"]),
                                  pytest.approx(at_prevalence(hi_se, hi_sp, 0.1)["ppv"])]
    assert row["flags_per_true_positive"]["ci95"] == [
        pytest.approx(at_prevalence(hi_se, hi_sp, 0.1)["flags_per_true_positive"]),
        pytest.approx(at_prevalence(lo_se, lo_sp, 0.1)["flags_per_true_positive"])]
    assert row["flag_rate"]["ci95"][0] == pytest.approx(at_prevalence(lo_se, hi_sp, 0.1)["flag_rate"])
    assert row["flag_rate"]["ci95"][0] < 0.27 < row["flag_rate"]["ci95"][1]
    assert set(table) == {"0.05", "0.10"}
    assert prevalence_table(proportion(4, 4), proportion(80, 100)) is None


def test_sensitivity_counts_in_indication_specificity_negatives_and_sub_indication_stands_apart():
    classes = np.array([IN] * 12 + [NEG] * 20 + [SUB] * 5)
    s = np.array([0.9] * 10 + [0.1] * 2 + [0.8] * 3 + [0.2] * 17 + [0.9, 0.9, 0.1, 0.1, 0.1])
    m = operating_metrics(classes, s, 0.5)
    assert (m["tp"], m["fn"], m["tn"], m["fp"], m["sub_flagged"]) == (10, 2, 17, 3, 2)
    assert (m["in_indication"], m["negatives"], m["sub_indication"], m["n"]) == (12, 20, 5, 37)
    assert m["sensitivity"]["value"] == pytest.approx(10 / 12)
    assert m["sensitivity"]["ci95"] == list(wilson_interval(10, 12))
    assert m["specificity"]["value"] == pytest.approx(17 / 20)
    assert (m["sub_indication_flags"]["k"], m["sub_indication_flags"]["n"]) == (2, 5)
    assert m["flag_rate"]["value"] == pytest.approx(15 / 37)
    # AUC and ECE leave the sub-indication series out: the same as without them
    assert m["auc"] == pytest.approx(roc_auc(classes[:32] == IN, s[:32]))
    assert m["ece"] == pytest.approx(expected_calibration_error(classes[:32] == IN, s[:32]))
    few = operating_metrics(classes[8:], s[8:], 0.5)  # 4 in-indication
    assert few["sensitivity"]["estimable"] is False and few["auc"] is None and few["at_prevalence"] is None
    with pytest.raises(ValueError, match="unknown indication classes"):
        operating_metrics(np.array(["positive", NEG]), np.array([0.9, 0.1]), 0.5)


def test_operating_point_gives_the_spare_cases_to_the_target_with_the_smaller_margin():
    # 20 in-indication, 40 negatives: sensitivity >= 0.95 needs 19 of 20 flagged
    pos = np.linspace(0.60, 0.99, 20)
    neg = np.linspace(0.01, 0.62, 40)
    classes = np.array([IN] * 20 + [NEG] * 40 + [SUB])
    scores = np.concatenate([pos, neg, [0.99]])
    op = choose_operating_point(classes, scores, 0.95, 0.90, 0.20, 0.10)
    t_sens, t_flag = op["threshold_for_sensitivity"], op["threshold_for_flag_rate"]
    assert (pos >= t_sens).sum() == 19  # the highest threshold that still flags 19 of 20
    assert (pos >= np.sort(pos)[1] + 1e-9).sum() < 19 and t_sens <= np.sort(pos)[1]
    assert op["meets_both"] and t_flag <= op["threshold"] <= t_sens
    sens = (pos >= op["threshold"]).mean()
    spec = (neg < op["threshold"]).mean()
    assert op["sensitivity"] == sens >= 0.95 and op["specificity"] == spec >= 0.90
    # no threshold in the allowed range has a larger smaller margin over the two targets
    grid = np.linspace(t_flag, t_sens, 2001)
    margins = [min((pos >= t).mean() - 0.95, (neg < t).mean() - 0.90) for t in grid]
    assert min(sens - 0.95, spec - 0.90) == pytest.approx(max(margins))
    assert op["flag_rate_at_prevalence"] == pytest.approx(0.1 * sens + 0.9 * (1 - spec))
    assert op["flag_rate_at_prevalence"] <= 0.2
    assert not np.isin(op["threshold"], scores)  # never on a score


def test_operating_point_sits_mid_range_when_sensitivity_is_saturated():
    # every positive above every negative: every threshold in the gap has sensitivity 1 and
    # specificity 1, so the threshold sits inside the gap, at neither edge
    pos = np.linspace(0.80, 0.99, 20)
    neg = np.linspace(0.01, 0.20, 40)
    classes = np.array([IN] * 20 + [NEG] * 40)
    op = choose_operating_point(classes, np.concatenate([pos, neg]), 0.95, 0.90, 0.20, 0.10)
    assert 0.20 < op["threshold"] < 0.80 and op["sensitivity"] == 1.0 and op["specificity"] == 1.0
    # ties run down into the negatives while specificity keeps the larger margin (>= 0.95):
    # the middle of that range sits lower in the gap than its middle, away from the positives
    assert op["threshold"] < 0.5


def test_operating_point_keeps_sensitivity_first_when_the_flag_rate_bound_cannot_be_met():
    classes = np.array([IN] * 20 + [NEG] * 20)
    scores = np.concatenate([np.linspace(0.2, 0.6, 20), np.linspace(0.3, 0.9, 20)])  # negatives above positives
    op = choose_operating_point(classes, scores, 0.95, 0.90, 0.20, 0.10)
    assert not op["meets_both"] and op["threshold"] == op["threshold_for_sensitivity"]
    assert op["sensitivity"] >= 0.95 and op["flag_rate_at_prevalence"] > 0.20


def test_subgroups_report_sensitivity_over_in_indication_and_specificity_over_negatives():
    classes = [IN, IN, SUB, NEG, NEG, IN]
    attributes = [{"lesion_type": "subdural", "mimic": "none", "scanner": "A"},
                  {"lesion_type": "intraparenchymal", "mimic": "none", "scanner": "B"},
                  {"lesion_type": "subdural", "mimic": "none", "scanner": "A"},
                  {"lesion_type": "none", "mimic": "calcification", "scanner": "A"},
                  {"lesion_type": "none", "mimic": "none", "scanner": "B"},
                  {"lesion_type": "subdural", "mimic": "calcification", "scanner": "B"}]
    scores = np.array([0.9, 0.2, 0.7, 0.7, 0.1, 0.8])
    out = subgroup_metrics(classes, attributes, scores, 0.5)
    assert set(out) == {"lesion_type", "mimic", "scanner"}
    subdural = out["lesion_type"]["subdural"]
    assert (subdural["sensitivity"]["k"], subdural["sensitivity"]["n"]) == (2, 2)
    assert subdural["specificity"] is None  # negatives have no lesion type: no flag rate over a mix
    assert (subdural["sub_indication_flags"]["k"], subdural["sub_indication_flags"]["n"]) == (1, 1)
    calc = out["mimic"]["calcification"]
    assert (calc["specificity"]["k"], calc["specificity"]["n"], calc["sensitivity"]["k"]) == (0, 1, 1)
    assert (out["scanner"]["B"]["sensitivity"]["n"], out["scanner"]["B"]["specificity"]["k"]) == (2, 1)


def test_flip_share_counts_flags_that_changed():
    f = flip_share(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]))
    assert (f["k"], f["n"]) == (2, 4)


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


def test_the_card_names_a_retired_sealed_set_the_train_split_holds():
    from training.card import retired_sentence

    info = {"retired": [{"name": "head-ct-sealed-x", "sha256": "ab" * 32, "series": 300, "held_out_external": 60}]}
    text = retired_sentence(info)
    assert text.startswith(" Train holds the 300 series of `head-ct-sealed-x` (content sha256 `abababababab...`)")
    assert "earlier releases read (the ledger lists each read)" in text
    assert text.endswith("its 60 series of the external scanner are left out.")
    assert retired_sentence({"retired": []}) == retired_sentence({}) == ""

"""The release page's arithmetic and the promotion rule (pure): Wilson intervals, ranges
from suppressed cells, and each refusal saying why."""

from __future__ import annotations

import pytest

from training.hub.releases import (
    BoxRow,
    Count,
    Proportion,
    Release,
    RoleFigures,
    Rule,
    evaluate,
    flag_verdict,
    next_ring,
    share,
    wilson,
)


def test_wilson_matches_the_textbook():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(0, 0) is None


def test_a_suppressed_cell_gives_a_range_never_a_point():
    exact = Proportion(Count(90, 0, 10), Count(10, 0, 10))
    assert exact.exact and share(exact) == "0.900" and exact.interval() == wilson(90, 100)
    hidden = Proportion(Count(90, 0, 10), Count(0, 1, 10))  # no: 0..9
    assert not hidden.exact and share(hidden) == "0.909 to 1.000"
    assert hidden.interval() == (wilson(90, 99)[0], wilson(90, 90)[1])
    assert share(None) == "no figure"


def test_flag_rate_against_the_card():
    assert flag_verdict((0.10, 0.10), (0.08, 0.15)) == "within the card's interval"
    assert flag_verdict((0.20, 0.22), (0.08, 0.15)) == "above the card's interval"
    assert flag_verdict((0.01, 0.02), (0.08, 0.15)) == "below the card's interval"
    assert flag_verdict((0.10, 0.10), None) == "the card gives no interval"


def _release(days: list[int], agreement: Proportion | None, alerts: list[str], not_analysed: float | None):
    boxes = [BoxRow(f"d{i}", f"Site {i}", "pilot", "shadow", days_in_shadow=d) for i, d in enumerate(days)]
    return Release("m-1.1.0.tar", "m", "1.1.0", "pilot", 0.0, None, boxes=boxes, agreement=agreement,
                   roles={"shadow": RoleFigures(not_analysed_rate=not_analysed)}, drift_alerts=alerts)


def test_each_refusal_says_why_and_the_rule_allows_when_all_hold():
    rule = Rule(min_boxes=3, min_days=7, min_agreement=0.95, max_not_analysed=0.05)
    good = Proportion(Count(990, 0, 10), Count(10, 0, 10))
    assert all(c.holds for c in evaluate(_release([7, 8, 9], good, [], 0.01), rule))
    checks = {c.name: c for c in evaluate(_release([7, 8, 3], Proportion(Count(180, 0, 10), Count(0, 2, 10)),
                                                   ["Site 0: kernel"], 0.08), rule)}
    assert checks["boxes"].says == "2 boxes with >= 7 days in shadow (Site 0 7 d, Site 1 8 d, Site 2 3 d); needs 3"
    assert checks["agreement"].says == ("agreement 0.909 over 180 series (2 cells under k counted at worst); "
                                        "needs >= 0.95")
    assert checks["drift"].says == "drift alerts: Site 0: kernel"
    assert checks["not-analysed"].says == "not-analysed rate 8.0 %; needs <= 5 %"
    assert not any(c.holds for c in checks.values())
    assert [c.says for c in evaluate(_release([], None, [], None), rule)][1:] == [
        "no agreement counts reported yet", "no drift alert", "no not-analysed rate reported yet"]
    assert next_ring("pilot") == "all" and next_ring("all") is None

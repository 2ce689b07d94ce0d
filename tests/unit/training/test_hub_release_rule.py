"""The release page's arithmetic and the promotion rule (pure): Wilson intervals, ranges
from suppressed cells, and each refusal saying why."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training.hub.releases import (
    BoxRow,
    Count,
    Proportion,
    Release,
    RoleFigures,
    Rule,
    evaluate,
    expected_not_analysed,
    flag_verdict,
    next_ring,
    render,
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


def _release(days: list[int], agreement: Proportion | None, alerts: list[str], not_analysed: float | None,
             card_bound: float | None = None):
    boxes = [BoxRow(f"d{i}", f"Site {i}", "pilot", "shadow", days_in_shadow=d) for i, d in enumerate(days)]
    return Release("m-1.1.0.tar", "m", "1.1.0", "pilot", 0.0, None, boxes=boxes, agreement=agreement,
                   roles={"shadow": RoleFigures(not_analysed_rate=not_analysed)}, drift_alerts=alerts,
                   expected_not_analysed=card_bound)


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
    assert checks["not-analysed"].says == "not-analysed rate 8.0 %; needs <= 5 % (the bound set for this promotion)"
    assert not any(c.holds for c in checks.values())
    assert [c.says for c in evaluate(_release([], None, [], None), rule)][1:] == [
        "no agreement counts reported yet", "no drift alert", "no not-analysed rate reported yet"]
    assert next_ring("pilot") == "all" and next_ring("all") is None


def test_the_not_analysed_bound_is_the_cards_unless_one_is_set_and_5_percent_without_either():
    good = Proportion(Count(990, 0, 10), Count(10, 0, 10))

    def check(rule: Rule, rate: float, card_bound: float | None):
        return next(c for c in evaluate(_release([7, 8, 9], good, [], rate, card_bound), rule) if c.name == "not-analysed")

    card = wilson(0, 100)[1]  # the build's stream: 0 of 100 not analysed
    held = check(Rule(), 0.045, card)
    assert not held.holds
    assert held.says == "not-analysed rate 4.5 %; needs <= 3.7 % (the card's mixed stream, upper 95 % bound)"
    assert check(Rule(), 0.03, card).holds
    assert check(Rule(), 0.045, None).says == "not-analysed rate 4.5 %; needs <= 5 % (the default: the card gives no bound)"
    assert check(Rule(), 0.045, None).holds
    assert check(Rule(max_not_analysed=0.05), 0.045, card).holds, "a bound set for the decision wins"
    assert "within the card's bound (<= 5 % where the card gives none)" in Rule().words()
    assert Rule(max_not_analysed=0.02).words().endswith("not-analysed rate <= 2 %")


def test_the_cards_bound_comes_from_the_manifests_mixed_stream_and_the_page_shows_it():
    manifest = SimpleNamespace(metrics={"test": {}, "mixed_stream": {"onnxruntime/CPU/fp32": {
        "series": 100, "not_analysed": {"k": 0, "n": 100, "estimable": True, "value": 0.0, "ci95": [0.0, 0.037]}}}})
    assert expected_not_analysed(manifest) == 0.037
    assert expected_not_analysed(SimpleNamespace(metrics={"test": {}})) is None
    assert expected_not_analysed(SimpleNamespace()) is None
    release = _release([7, 8, 9], None, [], 0.02, card_bound=0.037)
    page = render([release], {release.target: evaluate(release, Rule())}, Rule())
    assert '<td class="not-analysed">2.0 % <span class="muted">(card: at most 3.7 %)</span></td>' in page
    assert "holds: not-analysed rate 2.0 %; needs &lt;= 3.7 % (the card&#39;s mixed stream, upper 95 % bound)" in page


def test_a_release_no_box_has_reported_on_says_so_under_its_figures_heading():
    """Issue 26 screenshots: the figures table of a release with no report yet was a bare
    header row of eight columns with nothing under it."""
    bare = Release("m-1.0.0.tar", "m", "1.0.0", "all", 0.0, None)
    page = render([bare], {bare.target: evaluate(bare, Rule())}, Rule())
    assert '<tr class="no-figures"><td colspan="9" class="muted">no daily report on it yet' in page
    reported = _release([7, 8, 9], None, [], 0.02)
    assert "no-figures" not in render([reported], {reported.target: evaluate(reported, Rule())}, Rule())

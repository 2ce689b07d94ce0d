"""The models page's what-if table (pure)."""

from __future__ import annotations

from appliance.web.model_stats import what_if


def test_the_what_if_counts_flags_per_day_and_ppv_from_feedback():
    scores = [(0.9, "agree", 1), (0.8, "false-positive", 1), (0.6, None, 1), (0.3, "missed-finding", 0),
              (0.1, "agree", 0)]
    at = {r["threshold"]: r for r in what_if(scores, days=2.0, thresholds=(0.05, 0.5, 0.85))}
    assert at[0.5]["flags_per_day"] == 1.5 and at[0.5]["judged"] == 2 and at[0.5]["ppv"] == 0.5
    assert at[0.85]["ppv"] == 1.0
    # At 0.05 everything is flagged: the missed finding counts as found, the agreed negative as a false alarm.
    assert at[0.05]["judged"] == 4 and at[0.05]["ppv"] == 0.5


def test_the_span_of_a_rate_reads_as_days():
    from appliance.web.model_stats import days_in_words

    assert [days_in_words(d) for d in (1.0, 2.5, 30.0)] == ["1 day", "2.5 days", "30 days"]

"""Done-means of issue 11: the monitor alerts on an unseen scanner style within 3 windows
and raises at most one false alert per 60 stable days on average (20 seeds)."""

from __future__ import annotations

from tests.helpers.drift import experiment


def test_alerts_on_unseen_style_and_stays_quiet_on_the_reference_style():
    result = experiment(range(20))
    false_alerts, delays = result["false_alerts"], result["delays"]
    print(f"\nfalse alerts over 60 stable days per seed: {false_alerts} (mean {sum(false_alerts) / 20:.2f})")
    print(f"days from the change to the alert per seed: {delays}")
    assert sum(false_alerts) / len(false_alerts) <= 1.0
    assert all(d is not None for d in delays), "a seed never alerted after the change"
    # Alert within 3 windows of the change: the window ending on the 3rd day after it at the latest.
    assert max(delays) <= 2

"""The sender's pure policy: status classes, backoff schedule, breaker, transfer syntaxes."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from appliance.config import SenderSettings
from appliance.send.policy import (
    Breaker,
    BreakerMode,
    Disposition,
    backoff_delay,
    choose_transfer_syntax,
    classify_status,
    next_association_at,
    proposed_syntaxes,
    retry_at,
)


@pytest.mark.parametrize(("status", "outcome"), [
    (0x0000, Disposition.SENT),
    (0xB000, Disposition.SENT),   # coercion of data elements
    (0xB007, Disposition.SENT),   # data set does not match SOP class (warning)
    (0x0001, Disposition.SENT),
    (0xA700, Disposition.DEAD),   # out of resources
    (0xA7FF, Disposition.DEAD),
    (0xA900, Disposition.DEAD),   # data set does not match SOP class
    (0xC000, Disposition.DEAD),   # cannot understand
    (0xC211, Disposition.DEAD),
    (0x0110, Disposition.RETRY),  # processing failure
    (0x0122, Disposition.RETRY),  # SOP class not supported (the peer may be reconfigured)
    (0xA800, Disposition.RETRY),
])
def test_statuses_map_to_sent_retry_or_dead(status, outcome):
    assert classify_status(status) is outcome


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap():
    delays = [backoff_delay(n, 5.0, 60.0, 0.0, 0.0) for n in range(0, 7)]
    assert delays == [0.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert backoff_delay(10_000, 5.0, 60.0, 0.0, 0.0) == 60.0  # no overflow


def test_jitter_only_shortens_and_stays_within_its_fraction():
    assert backoff_delay(3, 5.0, 60.0, 0.2, 0.0) == 20.0
    assert backoff_delay(3, 5.0, 60.0, 0.2, 0.5) == pytest.approx(18.0)
    assert 16.0 < backoff_delay(3, 5.0, 60.0, 0.2, 0.999999) <= 16.0 + 1e-4


def test_an_object_is_retried_with_backoff_until_max_attempts_then_given_up():
    policy = SenderSettings(retry_initial_s=1, retry_max_s=8, retry_jitter=0, max_attempts=4)
    assert [retry_at(n, 100.0, policy, 0.0) for n in (1, 2, 3, 4, 5)] == [101, 102, 104, None, None]


def test_breaker_opens_after_threshold_failures_then_half_opens_after_cooldown():
    breaker = Breaker(threshold=3, cooldown_s=30.0)
    assert breaker.mode(0) is BreakerMode.CLOSED
    breaker = breaker.after_failure(10).after_failure(11)
    assert breaker.mode(11) is BreakerMode.CLOSED and breaker.failures == 2
    breaker = breaker.after_failure(12)
    assert breaker.mode(12) is BreakerMode.OPEN and breaker.mode(41.9) is BreakerMode.OPEN
    assert breaker.closes_trial_at() == 42.0
    assert breaker.mode(42) is BreakerMode.HALF_OPEN


def test_a_failed_trial_reopens_for_a_full_cooldown_and_a_good_one_closes():
    opened = Breaker(threshold=2, cooldown_s=30.0).after_failure(0).after_failure(1)
    reopened = opened.after_failure(31)   # the half-open trial failed
    assert reopened.mode(31) is BreakerMode.OPEN and reopened.closes_trial_at() == 61
    closed = reopened.after_success()
    assert closed.mode(31) is BreakerMode.CLOSED and closed.failures == 0


def test_association_retries_back_off_while_closed_and_wait_for_the_trial_when_open():
    policy = SenderSettings(retry_initial_s=2, retry_max_s=100, retry_jitter=0,
                            breaker_failures=3, breaker_cooldown_s=50)
    breaker = Breaker(policy.breaker_failures, policy.breaker_cooldown_s)
    breaker = breaker.after_failure(0)
    assert next_association_at(breaker, 0, policy, 0.0) == 2
    breaker = breaker.after_failure(2)
    assert next_association_at(breaker, 2, policy, 0.0) == 6
    breaker = breaker.after_failure(6)
    assert next_association_at(breaker, 6, policy, 0.0) == 56   # open: cooldown, not backoff


def test_each_object_proposes_its_own_syntax_then_explicit_then_implicit_once_each():
    assert proposed_syntaxes(RLELossless) == (RLELossless, ExplicitVRLittleEndian,
                                              ImplicitVRLittleEndian)
    assert proposed_syntaxes(ExplicitVRLittleEndian) == (ExplicitVRLittleEndian,
                                                         ImplicitVRLittleEndian)


@pytest.mark.parametrize(("own", "accepted", "chosen"), [
    (JPEG2000Lossless, [ImplicitVRLittleEndian, JPEG2000Lossless], JPEG2000Lossless),
    (JPEG2000Lossless, [ImplicitVRLittleEndian, ExplicitVRLittleEndian], ExplicitVRLittleEndian),
    (ExplicitVRLittleEndian, [ImplicitVRLittleEndian], ImplicitVRLittleEndian),
    (RLELossless, [JPEG2000Lossless], None),
    (ExplicitVRLittleEndian, [], None),
])
def test_the_best_accepted_syntax_is_chosen(own, accepted, chosen):
    assert choose_transfer_syntax(own, accepted) == chosen


def test_retry_bounds_are_validated():
    with pytest.raises(ValueError, match="retry_initial_s"):
        SenderSettings(retry_initial_s=10, retry_max_s=5)

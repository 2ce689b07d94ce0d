"""The sender's policy as pure functions and values: what a status means, when to retry,
the circuit breaker, and which transfer syntax to send on.

- an object's failed try waits :func:`backoff_delay` (exponential, jittered, capped) and
  is dead-lettered after ``max_attempts`` tries or at once on a permanent failure status
  (:func:`classify_status`);
- association failures are the destination's, not the object's: they consume no tries.
  The :class:`Breaker` counts them; below ``breaker_failures`` in a row the lane waits
  :func:`backoff_delay` between associations, at the threshold it opens for
  ``breaker_cooldown_s`` and then lets one trial object through (half-open);
- for every object we propose its own transfer syntax, Explicit VR Little Endian and
  Implicit VR Little Endian as separate presentation contexts and send on the best one
  the peer accepted (:func:`choose_transfer_syntax`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance import dimse
from appliance.config import SenderSettings

FALLBACK_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class Disposition(enum.Enum):
    """What a C-STORE response status means for the object."""

    SENT = enum.auto()  # success or warning: the peer has it
    RETRY = enum.auto()  # a failure that may pass: try again later
    DEAD = enum.auto()  # a failure that will not pass: dead-letter


def classify_status(status: int) -> Disposition:
    """Map a C-STORE response status to what happens to the object.

    Success (0x0000) and warnings (0xB0xx and the general warnings 0x0001, 0x0107, 0x0116)
    count as sent. Out of resources (0xA7xx), data set does not match SOP class (0xA9xx)
    and cannot understand (0xCxxx) are permanent. Any other failure is retried.
    """
    if dimse.is_success_or_warning(status):
        return Disposition.SENT
    if dimse.is_permanent_failure(status):
        return Disposition.DEAD
    return Disposition.RETRY


def backoff_delay(failures: int, initial_s: float, max_s: float, jitter: float, draw: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row.

    ``initial_s`` doubled per failure, capped at ``max_s``, then shortened by up to the
    fraction ``jitter`` (``draw`` in [0, 1) picks how much) so that queues which failed
    together do not retry in lockstep.
    """
    if failures < 1:
        return 0.0
    base = min(max_s, math.ldexp(initial_s, min(failures - 1, 64)))
    return base * (1.0 - jitter * draw)


class BreakerMode(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class Breaker:
    """A destination's circuit breaker as an immutable value; transitions return new ones.

    Parameters
    ----------
    threshold : int
        Association failures in a row that open the circuit.
    cooldown_s : float
        How long it stays open before one trial (half-open).
    failures : int
        Association failures in a row so far.
    opened_at : float or None
        When it (re)opened; None while closed.
    """

    threshold: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None

    def mode(self, now: float) -> BreakerMode:
        if self.opened_at is None:
            return BreakerMode.CLOSED
        if now < self.opened_at:  # opened "in the future": the wall clock stepped back since
            return BreakerMode.HALF_OPEN
        return BreakerMode.OPEN if now < self.opened_at + self.cooldown_s else BreakerMode.HALF_OPEN

    def closes_trial_at(self) -> float | None:
        """When an open circuit lets its trial through; None while closed."""
        return None if self.opened_at is None else self.opened_at + self.cooldown_s

    def after_success(self) -> Breaker:
        return replace(self, failures=0, opened_at=None)

    def after_failure(self, now: float) -> Breaker:
        failures = self.failures + 1
        opened_at = now if failures >= self.threshold else None
        return replace(self, failures=failures, opened_at=opened_at)


def next_association_at(breaker: Breaker, now: float, policy: SenderSettings, draw: float) -> float:
    """After an association failure: when the lane may try the destination again."""
    trial = breaker.closes_trial_at()
    if trial is not None:
        return trial
    return now + backoff_delay(breaker.failures, policy.retry_initial_s, policy.retry_max_s, policy.retry_jitter, draw)


def retry_at(attempts: int, now: float, policy: SenderSettings, draw: float) -> float | None:
    """After an object's ``attempts``-th failed try: when to try again, or None to give up."""
    if attempts >= policy.max_attempts:
        return None
    return now + backoff_delay(attempts, policy.retry_initial_s, policy.retry_max_s, policy.retry_jitter, draw)


def proposed_syntaxes(own: UID) -> tuple[UID, ...]:
    """The transfer syntaxes proposed for an object, one presentation context each."""
    return tuple(dict.fromkeys((UID(own), *FALLBACK_SYNTAXES)))


def choose_transfer_syntax(own: UID, accepted: Sequence[UID]) -> UID | None:
    """The accepted transfer syntax to send on: the object's own, else Explicit, else
    Implicit VR Little Endian; None when the peer accepted none of them."""
    for syntax in proposed_syntaxes(own):
        if syntax in accepted:
            return syntax
    return None

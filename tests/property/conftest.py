"""Hypothesis profiles: "ci" (the default) draws a bounded, derandomised set of examples,
the same on every run; "long" (HYPOTHESIS_PROFILE=long, `scripts/prove --long`) draws
many more, randomised."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

"""The pipeline never turns a broken run into a negative: NaN, Inf, timeouts and short
outputs all end in InferenceError with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.models.backends import Runtime, Target
from appliance.errors import InferenceError
from appliance.triage.pipeline import heat_map, infer

INPUTS = np.zeros((5, 3, 8, 8), np.float32)
NO_DEADLINE = float("inf")


class Deadline(float):
    """A deadline the test moves past by hand (:meth:`expire`), whatever the real clock
    says: compared with any time, it is in the future until expired, then in the past."""

    def __new__(cls) -> "Deadline":
        deadline = super().__new__(cls, 0.0)
        deadline.passed = False
        return deadline

    def expire(self) -> None:
        self.passed = True

    def __lt__(self, now: float) -> bool:  # also `now > deadline`
        return self.passed

    def __le__(self, now: float) -> bool:  # also `now >= deadline`
        return self.passed

    def __gt__(self, now: float) -> bool:  # also `now < deadline`
        return not self.passed

    def __ge__(self, now: float) -> bool:  # also `now <= deadline`
        return not self.passed


def runtime(score_value: float, n: int | None = None, after_each=lambda: None) -> Runtime:
    def run(x: np.ndarray):
        after_each()
        count = len(x) if n is None else n
        return np.full(count, score_value, np.float32), np.zeros((count, 2, 2), np.float32)

    return Runtime(Target("onnxruntime", "CPU"), "fp32", run)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_fail_the_series(bad):
    with pytest.raises(InferenceError, match="NaN or Inf"):
        infer(runtime(bad), INPUTS, batch=2, deadline=NO_DEADLINE)


def test_the_deadline_fails_the_series_between_batches():
    deadline = Deadline()  # passes during the first batch
    with pytest.raises(InferenceError, match="timed out after 2 of 5 images"):
        infer(runtime(0.5, after_each=deadline.expire), INPUTS, batch=2, deadline=deadline)


def test_a_model_returning_too_few_scores_fails_the_series():
    with pytest.raises(InferenceError, match="returned 1 scores for 5 images"):
        infer(runtime(0.5, n=1), INPUTS, batch=5, deadline=NO_DEADLINE)


def test_finite_outputs_pass_through_and_heat_maps_are_in_unit_range():
    scores, cams = infer(runtime(0.25), INPUTS, batch=2, deadline=NO_DEADLINE)
    assert scores.tolist() == [0.25] * 5 and cams.shape == (5, 2, 2)
    heat = heat_map(np.array([[-1000.0, 0.0], [3.0, 1000.0]]))
    assert heat.min() >= 0 and heat.max() <= 1 and heat[0, 1] == pytest.approx(0.5)

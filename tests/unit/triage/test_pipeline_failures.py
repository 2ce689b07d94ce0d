"""The pipeline never turns a broken run into a negative: NaN, Inf, timeouts and short
outputs all end in InferenceError with the reason."""

from __future__ import annotations

import time

import numpy as np
import pytest

from appliance.models.backends import Runtime, Target
from appliance.errors import InferenceError
from appliance.triage.pipeline import heat_map, infer

INPUTS = np.zeros((5, 3, 8, 8), np.float32)


def runtime(score_value: float, n: int | None = None, delay: float = 0.0) -> Runtime:
    def run(x: np.ndarray):
        time.sleep(delay)
        count = len(x) if n is None else n
        return np.full(count, score_value, np.float32), np.zeros((count, 2, 2), np.float32)

    return Runtime(Target("onnxruntime", "CPU"), "fp32", run)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_fail_the_series(bad):
    with pytest.raises(InferenceError, match="NaN or Inf"):
        infer(runtime(bad), INPUTS, batch=2, deadline=time.monotonic() + 60)


def test_the_deadline_fails_the_series_between_batches():
    with pytest.raises(InferenceError, match="timed out after 2 of 5 images"):
        infer(runtime(0.5, delay=0.05), INPUTS, batch=2, deadline=time.monotonic() + 0.01)


def test_a_model_returning_too_few_scores_fails_the_series():
    with pytest.raises(InferenceError, match="returned 1 scores for 5 images"):
        infer(runtime(0.5, n=1), INPUTS, batch=5, deadline=time.monotonic() + 60)


def test_finite_outputs_pass_through_and_heat_maps_are_in_unit_range():
    scores, cams = infer(runtime(0.25), INPUTS, batch=2, deadline=time.monotonic() + 60)
    assert scores.tolist() == [0.25] * 5 and cams.shape == (5, 2, 2)
    heat = heat_map(np.array([[-1000.0, 0.0], [3.0, 1000.0]]))
    assert heat.min() >= 0 and heat.max() <= 1 and heat[0, 1] == pytest.approx(0.5)

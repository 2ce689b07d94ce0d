"""The banded resize and in-place windows compute what the plain definitions compute."""

from __future__ import annotations

import numpy as np
import pytest

from appliance import pixels
from appliance.triage import preprocess


@pytest.mark.parametrize(("shape", "size"), [((512, 512), 128), ((3, 300, 200), 128), ((64, 48), 128),
                                             ((1, 250, 300), 96)])
def test_banded_resize_equals_the_dense_filter(shape, size):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    h, w = shape[-2:]
    dense = pixels._resample_matrix(h, size) @ image @ pixels._resample_matrix(w, size).T
    np.testing.assert_allclose(pixels.resize(image, size), dense, atol=1e-6)


def test_multi_window_is_the_stack_of_single_windows():
    hu = np.random.default_rng(1).uniform(-1100, 3000, (40, 50)).astype(np.float32)
    stacked = np.stack([pixels.window(hu, c, w) for _, c, w in preprocess.HEAD_CT_WINDOWS])
    assert np.array_equal(pixels.multi_window(hu, preprocess.HEAD_CT_WINDOWS), stacked)
    with pytest.raises(ValueError, match="positive"):
        pixels.multi_window(hu, [("bad", 40.0, 0.0)])

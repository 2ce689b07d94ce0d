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


def test_multi_window_is_the_stack_of_single_windows_with_dense_pixels_zeroed_where_asked():
    hu = np.random.default_rng(1).uniform(-1100, 3000, (40, 50)).astype(np.float32)
    windows = (*preprocess.HEAD_CT_WINDOWS, preprocess.BLOOD_WINDOW)
    stacked = np.stack([pixels.window(hu, c, w) * (hu <= rest[0] if rest else 1) for _, c, w, *rest in windows])
    assert np.array_equal(pixels.multi_window(hu, windows), stacked)
    blood = pixels.multi_window(np.array([[10.0, 65.0, 150.0, 200.0, 201.0, 1600.0]], np.float32),
                                [preprocess.BLOOD_WINDOW])[0, 0]
    np.testing.assert_allclose(blood, [0.0, 0.75, 1.0, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        pixels.multi_window(hu, [("bad", 40.0, 0.0)])

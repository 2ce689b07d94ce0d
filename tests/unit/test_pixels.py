"""The banded resize and in-place windows compute what the plain definitions compute."""

from __future__ import annotations

import numpy as np
import pytest

from appliance import pixels
from appliance.triage import preprocess


@pytest.mark.parametrize(("shape", "size"), [((512, 512), 128), ((3, 300, 200), 128), ((64, 48), 128),
                                             ((1, 250, 300), 96), ((4, 512, 512), 256), ((1, 512, 512), 4),
                                             ((2, 1, 9), 5), ((768, 768), 256)])
def test_banded_resize_equals_the_dense_filter(shape, size):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    h, w = shape[-2:]
    dense = pixels._resample_matrix(h, size) @ image @ pixels._resample_matrix(w, size).T
    np.testing.assert_allclose(pixels.resize(image, size), dense, atol=1e-6)


@pytest.mark.parametrize(("n_in", "n_out", "band"), [(512, 256, (1, 255, 2)), (512, 128, (1, 127, 4)),
                                                     (768, 256, (1, 255, 3)), (300, 128, None),
                                                     (1, 5, None)])
def test_an_integer_shrink_reads_strided_views_and_gives_the_gathering_sums_bit_for_bit(n_in, n_out, band):
    lo, hi, step = pixels._regular_band(n_in, n_out)
    assert (lo, hi, step) == band if band else hi - lo < 2  # no band: every output gathers
    image = np.random.default_rng(2).normal(size=(4, 3, n_in)).astype(np.float32)
    index, weights = pixels._resample_taps(n_in, n_out)
    gathered = image[..., index[:, 0]] * weights[:, 0]
    for tap in range(1, weights.shape[1]):
        gathered = gathered + image[..., index[:, tap]] * weights[:, tap]
    assert pixels._resample_axis(image, n_out, -1).tobytes() == gathered.tobytes()
    across = pixels._resample_axis(np.ascontiguousarray(image.swapaxes(-1, -2)), n_out, -2)
    assert across.swapaxes(-1, -2).tobytes() == gathered.tobytes()


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

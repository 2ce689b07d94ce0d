"""The banded resize and products and the in-place windows compute what the plain definitions compute."""

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


@pytest.mark.parametrize(("n_in", "n_out", "span"), [(512, 256, 18), (512, 128, 36), (768, 256, 26), (128, 512, 4)])
def test_resampling_bands_reach_only_the_inputs_their_filter_weights(n_in, n_out, span):
    blocks = pixels.bands(pixels._resample_matrix(n_in, n_out), pixels.ROW_BLOCK)
    assert [(lo, hi) for lo, hi, *_ in blocks] == [(lo, min(lo + 8, n_out)) for lo in range(0, n_out, 8)]
    middle = blocks[len(blocks) // 2]
    assert middle[3] - middle[2] == span == middle[4].shape[1]  # 8 outputs' taps, not all n_in inputs


def test_banded_products_equal_the_dense_products_over_rows_columns_and_a_batch():
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(37, 60)) * (np.abs(np.arange(37)[:, None] * 1.6 - np.arange(60)[None, :]) < 4)
    weights[5] = 0.0  # a row that reaches nothing
    x = rng.normal(size=(3, 60, 11)).astype(np.float32)
    rows = pixels.banded_rows(pixels.bands(weights, 8), x)
    np.testing.assert_allclose(rows, weights.astype(np.float32) @ x, atol=1e-5)
    columns = pixels.banded_columns(pixels.bands(weights, 32), x.swapaxes(-1, -2))
    np.testing.assert_allclose(columns, x.swapaxes(-1, -2) @ weights.T.astype(np.float32), atol=1e-5)
    assert rows.dtype == columns.dtype == np.float32 and not rows[:, 5].any()


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

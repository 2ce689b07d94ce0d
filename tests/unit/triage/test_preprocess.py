import numpy as np
import pytest

from appliance import pixels
from appliance.triage import preprocess as pp


def test_to_hu_applies_slope_and_intercept():
    stored = np.array([[0, 1024], [2048, -1]], dtype=np.int16)
    hu = pixels.to_hu(stored, slope=0.5, intercept=-1024)
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu, [[-1024, -512], [0, -1024.5]])


def test_window_maps_edges_to_zero_and_one_and_clips():
    hu = np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0])
    np.testing.assert_allclose(pixels.window(hu, 40, 80), [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="width"):
        pixels.window(hu, 40, 0)


def test_multi_window_stacks_channels_in_order():
    hu = np.full((4, 4), 60.0)
    out = pixels.multi_window(hu, pp.HEAD_CT_WINDOWS)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out[:, 0, 0], [0.75, 0.4, (60 - (600 - 1400)) / 2800], rtol=1e-6)


def test_pad_to_square_centres_and_fills():
    img = np.ones((2, 4))
    out = pixels.pad_to_square(img, fill=-1)
    assert out.shape == (4, 4)
    np.testing.assert_array_equal(out[0], -1)
    np.testing.assert_array_equal(out[1:3], 1)


def test_resize_keeps_constants_and_antialiases():
    np.testing.assert_allclose(pixels.resize(np.full((3, 50, 70), 0.25), 16), 0.25, rtol=1e-6)
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    small = pixels.resize(checker, 16)
    assert small.shape == (16, 16)
    np.testing.assert_allclose(small, 0.5, atol=0.02)  # no aliasing: 4x shrink averages the checkerboard


def test_resize_upscale_is_monotonic_on_a_ramp():
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))
    up = pixels.resize(ramp, 32)
    assert np.all(np.diff(up[5]) >= -1e-6) and up[5, 0] < 0.5 and up[5, -1] > 6.5


def test_ct_slice_input_shape_and_range():
    stored = np.full((60, 80), 1024 + 40, dtype=np.int16)
    x = pp.ct_slice_input(stored, 1.0, -1024.0, pp.HEAD_CT_WINDOWS, 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x[0, 16, 16] == pytest.approx(0.5)


def test_normalize_radiograph_inverts_monochrome1():
    img = np.random.default_rng(0).integers(0, 4096, (40, 30)).astype(np.uint16)
    m2 = pp.normalize_radiograph(img, "MONOCHROME2")
    m1 = pp.normalize_radiograph(img, "MONOCHROME1")
    assert m2.min() == 0 and m2.max() == 1
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)
    with pytest.raises(ValueError, match="PhotometricInterpretation"):
        pp.normalize_radiograph(img, "RGB")


def test_radiograph_input_shape():
    assert pp.radiograph_input(np.zeros((50, 40), np.uint16), "MONOCHROME2", 24).shape == (1, 24, 24)


def test_a_strided_normalisation_equals_the_full_one_strided():
    img = (np.random.default_rng(4).random((1100, 1300)) * 4095).astype(np.uint16)
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        full = pp.normalize_radiograph(img, photometric)
        assert np.array_equal(pp.normalize_radiograph(img, photometric, pixel_stride=4), full[::4, ::4])

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
    out = pixels.multi_window(hu, (*pp.HEAD_CT_WINDOWS, pp.BLOOD_WINDOW))
    assert out.shape == (4, 4, 4)
    np.testing.assert_allclose(out[:, 0, 0], [0.75, 0.4, (60 - (600 - 1400)) / 2800, 40 / 60], rtol=1e-6)


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
    assert x.shape == (len(pp.HEAD_CT_WINDOWS), 32, 32) and x.dtype == np.float32
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


def impulse_response(thickness: float, slab: float, n: int = 31) -> np.ndarray:
    """What a slab average makes of one bright slice in the middle of a dark series."""
    inputs = np.zeros((n, 1, 2, 2), np.float32)
    inputs[n // 2] = 1.0
    return pp.slab_average(inputs, np.arange(n) * thickness, thickness, slab)[:, 0, 0, 0]


def test_a_slab_of_thin_slices_weighs_each_by_its_share_of_the_slab():
    # 0.625 mm slices in a 5 mm slab: seven whole slices and half of one either side.
    np.testing.assert_allclose(impulse_response(0.625, 5.0)[15 - 4:15 + 5],
                               [1 / 16] + [1 / 8] * 7 + [1 / 16], rtol=1e-6)
    # 2.5 mm slices: the slice itself and half of each neighbour.
    np.testing.assert_allclose(impulse_response(2.5, 5.0)[13:18], [0, 0.25, 0.5, 0.25, 0], atol=1e-7)


def test_slices_as_thick_as_the_slab_are_left_alone():
    for thickness in (5.0, 10.0):
        np.testing.assert_array_equal(impulse_response(thickness, 5.0), np.eye(31)[15])


def test_a_slab_average_keeps_constants_at_the_ends_and_quarters_thin_slice_noise():
    positions = np.arange(64) * 0.625
    flat = np.full((64, 3, 8, 8), 0.4, np.float32)
    np.testing.assert_allclose(pp.slab_average(flat, positions, 0.625, 5.0), flat, rtol=1e-6)
    noise = np.random.default_rng(3).normal(0.0, 1.0, (64, 1, 32, 32)).astype(np.float32)
    averaged = pp.slab_average(noise, positions, 0.625, 5.0)[8:-8]
    # Weights 1/8 (x7) and 1/16 (x2): variance 7/64 + 2/256 of one slice's.
    assert averaged.std() == pytest.approx(np.sqrt(7 / 64 + 2 / 256), rel=0.05)


def test_context_is_the_nearest_slice_a_step_away_and_the_end_slice_beyond_the_ends():
    assert pp.context_index(np.arange(5) * 5.0, 5.0, 1).tolist() == [
        [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    # 1.25 mm slices, a 5 mm step: four slices away, clamped at the ends.
    thin = pp.context_index(np.arange(12) * 1.25, 5.0, 1)
    assert thin[6].tolist() == [2, 6, 10] and thin[1].tolist() == [0, 1, 5] and thin[11].tolist() == [7, 11, 11]
    assert pp.context_index(np.array([3.0]), 5.0, 2).tolist() == [[0, 0, 0, 0, 0]]


def test_with_context_puts_the_lower_neighbour_first_and_the_slice_in_the_middle():
    inputs = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 2, 3, 3), np.float32)
    inputs[:, 1] += 10  # a second window
    out = pp.with_context(inputs, pp.context_index(np.arange(4) * 5.0, 5.0, 1))
    assert out.shape == (4, 6, 3, 3)
    assert out[1, :, 0, 0].tolist() == [0, 10, 1, 11, 2, 12]
    assert out[0, :, 0, 0].tolist() == [0, 10, 0, 10, 1, 11]

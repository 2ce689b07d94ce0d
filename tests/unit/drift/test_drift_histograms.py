import numpy as np
import pytest

from appliance.drift import histograms as h


def test_histogram_counts_out_of_range_in_end_bins():
    counts = h.histogram(np.array([-5.0, 0.5, 1.5, 99.0]), np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(counts, [2, 2])


def test_ct_series_histograms_features_and_totals():
    hu = np.full((7, 16, 16), 35.0)
    hu[:, :4] = -1000.0
    out = h.ct_series_histograms(hu, slice_thickness_mm=5.0, pixel_spacing_mm=0.9)
    assert set(out) == set(h.CT_EDGES)
    assert sum(out["hu"]["counts"]) == 7 * 4 * 4
    edges = np.array(out["hu"]["edges"])
    assert out["hu"]["counts"][int(np.searchsorted(edges, 35.0, side="right")) - 1] == 7 * 3 * 4
    assert out["slice_count"]["counts"][0] == 1  # 7 slices fall in [0, 10)
    assert sum(out["pixel_spacing_mm"]["counts"]) == 1


def test_radiograph_histograms_and_merge():
    a = h.radiograph_histograms(np.zeros((8, 8)), 0.7)
    b = h.radiograph_histograms(np.ones((8, 8)), 0.7)
    m = h.merge([a, b])
    assert m["intensity"]["counts"][0] == 4 and m["intensity"]["counts"][-1] == 4
    assert sum(m["pixel_spacing_mm"]["counts"]) == 2


def test_merge_refuses_different_edges():
    a = h.radiograph_histograms(np.zeros((8, 8)), 0.7)
    b = {k: dict(v) for k, v in a.items()}
    b["intensity"] = {"edges": [0.0, 1.0], "counts": [1]}
    with pytest.raises(ValueError, match="edges differ"):
        h.merge([a, b])
    with pytest.raises(ValueError):
        h.merge([])

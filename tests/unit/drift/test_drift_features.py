"""Series features: the reference's bins and code, controlled labels only."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from appliance.drift.features import feature_edges, intensity_counts, normalise_label, series_features
from appliance.drift.histograms import PIXEL_STRIDE, ct_series_histograms, radiograph_histograms
from appliance.drift.schema import LABEL_RE


@pytest.mark.parametrize("raw, label", [
    ("SIEMENS", "SIEMENS"), ("  GE MEDICAL SYSTEMS ", "GE MEDICAL SYSTEMS"), ("B70f\\Hr40", "B70f Hr40"),
    ("Ingenuity/CT (v4.1)", "Ingenuity CT v4.1"), ("", "unknown"), (None, "unknown"), ("__--", "unknown"),
    ("x" * 100, "x" * 64), ("Brilliance\u00e9 64", "Brilliance 64"),
])
def test_labels_are_normalised_to_the_controlled_form(raw, label):
    assert normalise_label(raw) == label
    assert LABEL_RE.match(normalise_label(raw))


def test_multi_valued_kernel():
    ds = pydicom.Dataset()
    ds.ConvolutionKernel = ["FC23", "AIDR 3D"]
    assert normalise_label(ds.ConvolutionKernel) == "FC23 AIDR 3D"


def test_ct_features_equal_the_reference_code():
    rng = np.random.default_rng(0)
    hu = rng.normal(30, 300, (5, 64, 48)).astype(np.float32)
    header = pydicom.Dataset()
    header.Rows, header.Columns, header.PixelSpacing, header.SliceThickness = 64, 48, [0.45, 0.45], 2.5
    header.KVP, header.ConvolutionKernel, header.Manufacturer = 120, "FC23", "ACME"
    header.ManufacturerModelName, header.BodyPartExamined = "Scan 64", "HEAD"
    header.DeviceSerialNumber, header.InstitutionName = "SN-99812", "St Elsewhere"
    counts = [intensity_counts("ct_slice", s[::PIXEL_STRIDE, ::PIXEL_STRIDE]) for s in hu]
    f = series_features("ct_slice", header, counts, 5)
    reference = ct_series_histograms(hu, 2.5, 0.45)
    for name, h in reference.items():
        assert f["histograms"][name] == h["counts"], name
        assert list(feature_edges("ct_slice")[name]) == h["edges"]
    assert f["categories"] == {"kernel": "FC23", "manufacturer_model": "ACME Scan 64", "body_part": "HEAD"}
    assert "SN-99812" not in repr(f) and "Elsewhere" not in repr(f)
    assert f["histograms"]["kvp"] == [0, 0, 0, 0, 0, 1, 0, 0, 0]


def test_radiograph_features_use_the_first_image_like_the_reference():
    rng = np.random.default_rng(1)
    first, second = rng.random((40, 40)), rng.random((40, 40)) ** 3
    header = {"Rows": 40, "Columns": 40, "ImagerPixelSpacing": [0.15, 0.15], "BodyPartExamined": "CHEST"}
    counts = [intensity_counts("radiograph", img[::PIXEL_STRIDE, ::PIXEL_STRIDE]) for img in (first, second)]
    f = series_features("radiograph", header, counts, 2)
    reference = radiograph_histograms(first, 0.15)
    for name, h in reference.items():
        assert f["histograms"][name] == h["counts"], name
    assert f["categories"] == {"manufacturer_model": "unknown", "body_part": "CHEST"}

"""Input constraints: the first one a series breaks, in words, before any inference."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from appliance.models.package import InputConstraints
from appliance.triage.constraints import first_violation

CONSTRAINTS = InputConstraints.model_validate({
    "slice_thickness_mm": {"min": 0.5, "max": 5.0},
    "pixel_spacing_mm": {"min": 0.3, "max": 1.0},
    "rows": {"min": 256, "max": 1024},
    "columns": {"min": 256},
    "slice_count": {"min": 3, "max": 400},
    "excluded_image_types": [["LOCALIZER"], ["DERIVED", "SECONDARY"]],
    "required_tags": ["ImagePositionPatient"],
})


def ct(count: int = 5, **changes) -> list[Dataset]:
    series = []
    for i in range(count):
        ds = Dataset()
        ds.Rows = ds.Columns = 512
        ds.SliceThickness, ds.PixelSpacing = 5.0, [0.45, 0.45]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0, 0, 5 * i]
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        series.append(ds)
    return series


def test_a_series_inside_every_range_passes_and_no_constraints_pass_anything():
    assert first_violation(CONSTRAINTS, ct()) is None
    assert first_violation(None, ct(1, SliceThickness=10.0)) is None  # an old package without constraints


@pytest.mark.parametrize("series, expected", [
    (ct(SliceThickness=10.0), "slice thickness 10 mm outside 0.5-5 mm"),
    (ct(PixelSpacing=[1.2, 1.2]), "pixel spacing 1.2 mm outside 0.3-1 mm"),
    (ct(Rows=128), "rows 128 outside 256-1024"),
    (ct(Columns=128), "columns 128 outside >= 256"),
    (ct(2), "2 images outside 3-400 images"),
    (ct(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), "image type LOCALIZER excluded"),
    (ct(ImageType=["DERIVED", "SECONDARY", "AXIAL"]), "image type DERIVED\\SECONDARY excluded"),
    (ct(ImagePositionPatient=None), "required attribute ImagePositionPatient missing"),
    (ct(SliceThickness=None), "slice thickness missing (must be 0.5-5 mm)"),
])
def test_the_broken_constraint_is_named_with_its_value(series, expected):
    assert first_violation(CONSTRAINTS, series) == expected


def test_derived_alone_is_not_derived_secondary():
    assert first_violation(CONSTRAINTS, ct(ImageType=["DERIVED", "PRIMARY", "AXIAL"])) is None


def test_one_odd_instance_makes_the_series_ineligible():
    series = ct()
    series[3].SliceThickness = 0.3
    assert first_violation(CONSTRAINTS, series) == "slice thickness 0.3 mm outside 0.5-5 mm"


def test_radiographs_use_imager_pixel_spacing():
    ds = Dataset()
    ds.Rows = ds.Columns = 512
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.ImagePositionPatient = [0, 0, 0]
    constraints = InputConstraints.model_validate({"pixel_spacing_mm": {"min": 0.1, "max": 0.2}})
    assert first_violation(constraints, [ds]) is None
    ds.ImagerPixelSpacing = [0.3, 0.3]
    assert first_violation(constraints, [ds]) == "pixel spacing 0.3 mm outside 0.1-0.2 mm"


def test_a_backwards_range_is_refused_by_the_manifest_schema():
    with pytest.raises(ValidationError, match="min 5.0 is above max 1.0"):
        InputConstraints.model_validate({"slice_thickness_mm": {"min": 5, "max": 1}})

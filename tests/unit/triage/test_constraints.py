"""Input constraints: the first one a series breaks, in words, before any inference."""

from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from appliance.models.manifest import InputConstraints
from appliance.triage.constraints import constraints_key, first_violation, instance_violation, patient_age

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


def test_instances_checked_as_they_arrived_give_the_same_answer_in_the_same_order():
    series = ct()
    series[1].Rows, series[3].SliceThickness = 128, 0.3
    known = {i: instance_violation(CONSTRAINTS, ds) for i, ds in enumerate(series) if i != 1}
    assert known[3] == "slice thickness 0.3 mm outside 0.5-5 mm"
    assert first_violation(CONSTRAINTS, series, known) == first_violation(CONSTRAINTS, series) == (
        "rows 128 outside 256-1024")
    assert first_violation(CONSTRAINTS, ct(2), {0: None, 1: None}) == "2 images outside 3-400 images"
    other = InputConstraints.model_validate({**CONSTRAINTS.model_dump(), "rows": {"min": 64}})
    assert constraints_key(other) != constraints_key(CONSTRAINTS) and constraints_key(None) == ""


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


# Patient age, view position, contrast ------------------------------------------------
def radiograph(**changes) -> list[Dataset]:
    ds = Dataset()
    ds.PatientAge, ds.ViewPosition = "045Y", "PA"
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return [ds]


ADULT_PA = InputConstraints.model_validate({"patient_age_years": {"min": 18, "max": 89}, "view_positions": ["PA"]})
NON_CONTRAST = InputConstraints.model_validate({"contrast": "none"})


@pytest.mark.parametrize("age, years, words", [
    ("045Y", 45.0, "45 years"),
    ("001Y", 1.0, "1 year"),
    ("006M", 0.5, "6 months"),
    ("002W", 14 / 365.25, "2 weeks"),
    ("010D", 10 / 365.25, "10 days"),
    ("095Y", 95.0, "90 years or older"),  # an exact age over 89 identifies; it is not repeated
])
def test_patient_age_is_read_in_every_unit(age, years, words):
    assert patient_age(radiograph(PatientAge=age)[0]) == (pytest.approx(years), words)


@pytest.mark.parametrize("age", ["45", "45Y", "045X", "0045Y", "abcY"])
def test_a_malformed_age_is_unknown_unless_the_birth_date_tells(age):
    with warnings.catch_warnings():  # pydicom warns about the invalid AS value on assignment
        warnings.simplefilter("ignore")
        ds = radiograph(PatientAge=age)[0]
    assert patient_age(ds) is None
    assert first_violation(ADULT_PA, [ds]) == "patient age unknown (PatientAge malformed: not like 045Y, 006M, 002W or 010D)"
    ds.PatientBirthDate, ds.StudyDate = "19800315", "20250314"
    assert patient_age(ds) == (44.0, "44 years")
    assert first_violation(ADULT_PA, [ds]) is None


def test_without_an_age_the_birth_date_and_study_date_give_it():
    ds = radiograph(PatientAge=None, PatientBirthDate="20070315", StudyDate="20250315")[0]
    assert patient_age(ds) == (18.0, "18 years")
    assert first_violation(ADULT_PA, [ds]) is None
    ds.StudyDate = "20250314"  # the day before the 18th birthday
    assert first_violation(ADULT_PA, [ds]) == "patient age 17 years outside 18-89 years"
    ds.PatientBirthDate, ds.StudyDate = "20250301", "20250311"
    assert patient_age(ds) == (pytest.approx(10 / 365.25), "10 days")


@pytest.mark.parametrize("changes", [
    {"PatientAge": None},
    {"PatientAge": None, "PatientBirthDate": "19800315"},  # no study date to count from
    {"PatientAge": None, "PatientBirthDate": "19800315", "StudyDate": "19700101"},  # born after the study
])
def test_no_usable_age_is_refused_as_unknown(changes):
    assert first_violation(ADULT_PA, radiograph(**changes)) == "patient age unknown"


@pytest.mark.parametrize("age, expected", [
    ("006Y", "patient age 6 years outside 18-89 years"),
    ("006M", "patient age 6 months outside 18-89 years"),
    ("017Y", "patient age 17 years outside 18-89 years"),
    ("090Y", "patient age 90 years or older outside 18-89 years"),
    ("018Y", None),
    ("089Y", None),
])
def test_an_age_outside_the_range_is_refused_in_words(age, expected):
    assert first_violation(ADULT_PA, radiograph(PatientAge=age)) == expected


@pytest.mark.parametrize("view, expected", [
    ("PA", None),
    ("AP", "view position AP not in PA"),
    ("LL", "view position LL not in PA"),
    (None, "view position missing (must be PA)"),
    ("", "view position missing (must be PA)"),
])
def test_the_view_position_must_be_one_the_model_learnt(view, expected):
    assert first_violation(ADULT_PA, radiograph(ViewPosition=view)) == expected


@pytest.mark.parametrize("changes, expected", [
    ({}, None),
    ({"ContrastBolusAgent": "NONE"}, None),  # some scanners say so explicitly
    ({"ContrastBolusAgent": "OMNIPAQUE"},
     "contrast agent given (ContrastBolusAgent 'OMNIPAQUE'); the model is for non-contrast studies"),
    ({"ContrastBolusRoute": "IV"},
     "contrast agent given (ContrastBolusRoute 'IV'); the model is for non-contrast studies"),
])
def test_a_contrast_enhanced_series_is_refused_by_a_non_contrast_model(changes, expected):
    assert first_violation(NON_CONTRAST, ct(**changes)) == expected


def test_packages_without_the_new_fields_check_none_of_them():
    assert first_violation(CONSTRAINTS, ct(ContrastBolusAgent="OMNIPAQUE", ViewPosition="AP", PatientAge="006Y")) is None
    assert CONSTRAINTS.patient_age_years is None and CONSTRAINTS.view_positions is None and CONSTRAINTS.contrast is None


def test_the_manifest_schema_refuses_an_unknown_contrast_value_and_an_empty_view_list():
    with pytest.raises(ValidationError, match="contrast"):
        InputConstraints.model_validate({"contrast": "iodine"})
    with pytest.raises(ValidationError, match="view_positions"):
        InputConstraints.model_validate({"view_positions": []})


def test_a_range_of_one_value_reads_as_that_value():
    exact = InputConstraints.model_validate({"rows": {"min": 512, "max": 512}})
    assert first_violation(exact, [ct(Rows=256)[0]]) == "rows 256, not 512"  # not "outside 512-512"


@pytest.mark.parametrize("spacing, expected", [
    (0.30, "pixel spacing 0.3 mm outside 0.3906-0.4883 mm"),
    # to four digits the value would read as the bound it breaks: more digits, both sides
    (0.48830, "pixel spacing 0.4883 mm outside 0.39062-0.48828 mm"),
])
def test_a_reason_reads_its_numbers_to_four_digits_unless_that_hides_the_breach(spacing, expected):
    fine = InputConstraints.model_validate({"pixel_spacing_mm": {"min": 0.390625, "max": 0.48828125}})
    assert first_violation(fine, ct(PixelSpacing=[spacing, spacing])) == expected

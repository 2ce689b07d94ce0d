"""The constraints a demo build writes cover exactly what its generator makes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom

from appliance.models.manifest import InputConstraints
from appliance.triage.constraints import first_violation
from training.constraints import input_constraints
from training.data.cr_synth import generate_cr_dataset
from training.data.ct_synth import generate_ct_dataset
from training.data.dicom_common import PATIENT_AGE_YEARS, synthetic_patient
from training.demo import chest_cr, head_ct


def series_headers(folder) -> list[list[pydicom.Dataset]]:
    by_series: dict[str, list] = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    return list(by_series.values())


def test_head_ct_training_series_meet_the_constraints_and_thick_slices_do_not(tmp_path):
    generator = replace(head_ct().generator, n_patients=4)
    generate_ct_dataset(generator, tmp_path, workers=1)
    constraints = InputConstraints.model_validate(input_constraints(generator))
    headers = series_headers(tmp_path)
    assert len(headers) == 4
    assert [first_violation(constraints, series) for series in headers] == [None] * 4
    for ds in headers[0]:
        ds.SliceThickness = 10.0
    assert first_violation(constraints, headers[0]) == "slice thickness 10 mm outside 0.625-5 mm"
    for ds in headers[1]:
        ds.ContrastBolusAgent = "OMNIPAQUE"
    assert first_violation(constraints, headers[1]).startswith("contrast agent given")
    for ds in headers[2]:
        ds.PatientAge = "012Y"
    assert first_violation(constraints, headers[2]) == "patient age 12 years outside 18-89 years"


def test_chest_training_images_meet_the_constraints(tmp_path):
    generator = replace(chest_cr().generator, n_patients=6)
    generate_cr_dataset(generator, tmp_path, workers=1)
    constraints = InputConstraints.model_validate(input_constraints(generator))
    headers = series_headers(tmp_path)
    assert [first_violation(constraints, s) for s in headers] == [None] * 6
    headers[0][0].ViewPosition = "AP"
    assert first_violation(constraints, headers[0]) == "view position AP not in PA"


def test_the_age_constraint_is_the_span_the_generator_draws_from():
    rng = np.random.default_rng(0)
    ages = {int(synthetic_patient(rng, "X", i)["PatientAge"][:3]) for i in range(5000)}
    low, high = PATIENT_AGE_YEARS
    assert ages == set(range(low, high + 1))
    for generator in (head_ct().generator, chest_cr().generator):
        assert input_constraints(generator)["patient_age_years"] == {"min": low, "max": high}


def test_full_builds_write_constraints_and_quick_test_builds_do_not():
    assert head_ct().constrain_inputs and chest_cr().constrain_inputs
    assert not head_ct(quick=True).constrain_inputs

"""The constraints a demo build writes cover exactly what its generator makes."""

from __future__ import annotations

from dataclasses import replace

import pydicom

from appliance.models.package import InputConstraints
from appliance.triage.constraints import first_violation
from training.constraints import input_constraints
from training.data.cr_synth import generate_cr_dataset
from training.data.ct_synth import generate_ct_dataset
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


def test_chest_training_images_meet_the_constraints(tmp_path):
    generator = replace(chest_cr().generator, n_patients=6)
    generate_cr_dataset(generator, tmp_path, workers=1)
    constraints = InputConstraints.model_validate(input_constraints(generator))
    assert [first_violation(constraints, s) for s in series_headers(tmp_path)] == [None] * 6


def test_full_builds_write_constraints_and_quick_test_builds_do_not():
    assert head_ct().constrain_inputs and chest_cr().constrain_inputs
    assert not head_ct(quick=True).constrain_inputs

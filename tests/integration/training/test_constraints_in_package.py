"""A build that constrains its inputs signs its training data's ranges into the manifest,
and the appliance reads them back from the verified package."""

from dataclasses import replace

from appliance.models.manifest import InputConstraints
from appliance.models.package import verify_package
from training.__main__ import main
from training.constraints import input_constraints
from training.demo import DEMOS


def test_a_constrained_build_signs_its_training_ranges_into_the_manifest(tmp_path, quick_build):
    key = tmp_path / "keys" / "demo.key"
    assert main(["keygen", "--out", str(key)]) == 0
    spec = replace(DEMOS["head-ct"](quick=True), constrain_inputs=True)
    info = quick_build(spec, tmp_path, key)
    manifest = verify_package(info["package"], [key.with_suffix(".pub")])
    assert manifest.input_constraints == InputConstraints.model_validate(input_constraints(spec.generator))
    assert manifest.input_constraints.slice_thickness_mm.min == manifest.input_constraints.slice_thickness_mm.max == 12.0

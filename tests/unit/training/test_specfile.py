"""Model spec files: the demos are two of them, and a wrong key is named."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from training.demo import DEMOS
from training.errors import SpecError
from training.indication import IPH_MIN_ML, PTX_MIN_RIM_MM, SDH_MIN_MM
from training.sealed import ledger_lines
from training.specfile import SPECS, load_spec, spec_from_dict

#: What a quick (test-fixture) demo changes of its spec file.
QUICK_FIELDS = {"version", "parent_version", "generator", "sealed", "input", "train", "thin_mm", "external_cap",
                "constrain_inputs", "mixed_stream_series", "retired"}


@pytest.mark.parametrize("model", ["head-ct", "chest-cr"])
def test_a_demo_is_its_spec_file_and_its_quick_size_changes_only_the_sizes(model):
    spec = load_spec(SPECS / f"{model}.toml")
    assert DEMOS[model]() == spec and spec.generator is not None and spec.sealed.sha256
    quick = DEMOS[model](quick=True)
    changed = {f.name for f in fields(spec) if getattr(spec, f.name) != getattr(quick, f.name)}
    assert changed <= QUICK_FIELDS
    assert quick.input.model_copy(update={"size": spec.input.size}) == spec.input
    assert quick.generator.seed == spec.generator.seed and quick.sealed.generator.seed == spec.sealed.generator.seed


def test_the_demo_indications_state_the_floors_the_code_counts_by():
    assert f"at least {IPH_MIN_ML:g} mL" in DEMOS["head-ct"]().indication
    assert f"at least {SDH_MIN_MM:g} mm thick" in DEMOS["head-ct"]().indication
    assert f"at least {PTX_MIN_RIM_MM:g} mm" in DEMOS["chest-cr"]().indication


def _demo_data() -> dict:
    return tomllib.loads((SPECS / "chest-cr.toml").read_text())


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("targets"), "no [targets] table"),
    (lambda d: d["train"].update(epoch=3), "[train]: unknown key(s) epoch"),
    (lambda d: d["model"].pop("finding"), "[model]: finding is missing"),
    (lambda d: d["model"].update(finding_code=["1", "SCT"]), "[model].finding_code: must be [code value, scheme"),
    (lambda d: d["sealed"].update(folder="sealed"), "[sealed]: give either folder or a [sealed.generator] table"),
    (lambda d: d["splits"].update(fractions=[0.5, 0.5]), "[splits].fractions: four shares"),
    (lambda d: d["routing"].pop("modality"), "[routing]:"),
    (lambda d: d["input"].update(kind="mri"), "[input]/[aggregation]:"),
    (lambda d: d.update(extra={}), "unknown key(s) extra"),
    (lambda d: d["generator"].update(kind="knee-mr"), "[generator].kind: must be one of head-ct, chest-cr"),
    (lambda d: d.update(retired=[{"name": "old", "generator": d["generator"]}]),
     "[[retired]] 1: sha256 is missing (a retired set is registered by its content hash)"),
    (lambda d: d.update(retired=[{**d["sealed"], "name": "again"}]), "[[retired]] 1: again is the [sealed] set"),
])
def test_a_wrong_spec_is_refused_naming_the_file_and_key(change, message):
    data = _demo_data()
    change(data)
    with pytest.raises(SpecError) as caught:
        spec_from_dict(data, Path("/specs/x.toml"))
    assert str(caught.value).startswith("/specs/x.toml") and message in str(caught.value)


def test_relative_paths_are_read_from_the_spec_files_folder(tmp_path):
    data = _demo_data()
    data.pop("generator")
    data["sealed"] = {"name": "mine", "folder": "sealed-data", "sha256": "ab" * 32}
    data["splits"] = {"file": "splits.csv"}
    spec = spec_from_dict(data, tmp_path / "specs" / "mine.toml")
    assert spec.generator is None and spec.sealed.folder == tmp_path / "specs" / "sealed-data"
    assert spec.split_file == tmp_path / "specs" / "splits.csv" and spec.sealed.generator is None


def test_an_unreadable_spec_file_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nid = 1")
    with pytest.raises(SpecError, match=f"{path}: cannot read the spec"):
        load_spec(path)


def test_the_head_ct_sealed_set_read_by_three_releases_is_retired_into_training():
    """Three builds read head-ct-sealed-20261206 (the ledger); it trains now, and a set of a
    seed never used before is the sealed one."""
    spec = load_spec(SPECS / "head-ct.toml")
    reads = [line for line in ledger_lines() if line["sealed_set"] == "head-ct-sealed-20261206"]
    assert len(reads) == 3 and {r["sealed_sha256"] for r in reads} == {spec.retired[0].sha256}
    assert [r.name for r in spec.retired] == ["head-ct-sealed-20261206"]
    assert spec.sealed.name != "head-ct-sealed-20261206" and spec.sealed.sha256 != spec.retired[0].sha256
    assert spec.sealed.generator.seed not in {spec.generator.seed, spec.retired[0].generator.seed}
    assert DEMOS["head-ct"](quick=True).retired == ()

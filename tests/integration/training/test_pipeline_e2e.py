"""Tiny end-to-end runs: generate -> train -> export -> quantise -> package -> verify."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from appliance.drift.histograms import CT_EDGES, RADIOGRAPH_EDGES
from appliance.errors import PackageError
from appliance.models.package import extract_package, verify_package
from appliance.models.qualify import cam_top_overlap
from training.__main__ import main
from training.backends import OPENVINO_OPTIONS, onnxruntime_runner, openvino_runner, run_batched
from training.card import fmt_proportion
from training.data.folder import SPLITS
from training.demo import DEMOS, build, load_splits
from training.evaluate import operating_metrics


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "demo.key"
    assert main(["keygen", "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("model, edges", [("head-ct", CT_EDGES), ("chest-cr", RADIOGRAPH_EDGES)])
def test_quick_build_gives_a_verified_package_whose_golden_outputs_reproduce(tmp_path, key, model, edges):
    info = build(DEMOS[model](quick=True), tmp_path / "out", key, tmp_path / "work", card_dir=tmp_path / "cards",
                 command="test", log=lambda line: None)
    pkg = tmp_path / "out" / f"{info['id']}-1.0.0.tar"
    manifest = verify_package(pkg, [key.with_suffix(".pub")])
    assert manifest.id == info["id"] and manifest.outputs.cam_size == manifest.input.size // 8
    built = {(v.backend, v.precision) for v in manifest.variants} | {(v.backend, v.precision) for v in manifest.excluded_variants}
    assert built == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    assert all(any(why in v.reason for why in ("gate split", "saturates", "heat map points elsewhere"))
               for v in manifest.excluded_variants)
    assert ("onnxruntime", "fp32") in {(v.backend, v.precision) for v in manifest.variants}
    assert manifest.calibration is not None and manifest.calibration.a > 0
    assert manifest.operating_point.chosen_on == "calibration split"
    assert manifest.lineage.dataset_manifest_sha256 == hashlib.sha256(
        (tmp_path / "work" / "dataset-manifest.txt").read_bytes()).hexdigest()
    kept = {f"{v.backend}/{v.precision}" for v in manifest.variants}
    assert set(manifest.metrics) == {"calibration", "gate", "test", "external"}
    assert manifest.golden_series and all(f.endswith(".dcm") for c in manifest.golden_series for f in c.files)
    assert all(v.tolerance.series_atol for v in manifest.variants)
    assert all(set(by_variant) == kept for by_variant in manifest.metrics.values())

    dest = tmp_path / "installed"
    extract_package(pkg, dest, [key.with_suffix(".pub")])
    golden = np.load(dest / manifest.golden, allow_pickle=False)
    assert golden["input"].shape[1:] == (manifest.input.channels, manifest.input.size, manifest.input.size)
    for v in manifest.variants:
        assert v.options == (OPENVINO_OPTIONS if v.backend == "openvino" else {})
        run = onnxruntime_runner(dest / v.files[0]) if v.backend == "onnxruntime" else openvino_runner(dest / v.files[0])
        score, cam = run(golden["input"])
        assert np.max(np.abs(score - golden["score"])) <= v.tolerance.score_atol
        assert cam_top_overlap(golden["cam"], cam) >= v.tolerance.cam_min_overlap

    drift = json.loads((dest / manifest.drift_reference).read_text())
    assert set(drift["histograms"]) == set(edges) and sum(next(iter(drift["histograms"].values()))["counts"]) > 0
    card = (tmp_path / "cards" / f"{info['id']}.md").read_text()
    assert "NOT FOR DIAGNOSTIC USE" in card and "size_bucket" in card and "scanner" in card and "contrast" in card
    assert "External validation" in card and "PPV" in card and "reduce_range" in card and "Input constraints" in card
    assert (dest / manifest.model_card).read_text() == card
    assert 0 <= manifest.operating_point.threshold <= 1 and manifest.operating_point.validation_sensitivity >= 0.95

    # The card's and the manifest's claims against a fresh evaluation of the installed package.
    spec = DEMOS[model](quick=True)
    splits = load_splits(spec, tmp_path / "work" / "data")
    assert {s.scanner for s in splits["external"]} == {spec.external_scanner}
    assert not any(s.scanner == spec.external_scanner for k in SPLITS for s in splits[k])
    patients = [{s.patient_id for s in splits[k]} for k in (*SPLITS, "external")]
    assert sum(len(p) for p in patients) == len(set().union(*patients))
    for v in manifest.variants:
        run = onnxruntime_runner(dest / v.files[0]) if v.backend == "onnxruntime" else openvino_runner(dest / v.files[0])
        for split in ("test", "external"):
            y = np.array([s.label for s in splits[split]])
            scores = np.array([manifest.series_score(run_batched(run, s.model_inputs())[0]) for s in splits[split]])
            fresh = operating_metrics(y, scores, manifest.operating_point.threshold, seed=spec.train.seed)
            claimed = manifest.metrics[split][f"{v.backend}/{v.precision}"]
            assert (fresh["tp"], fresh["fn"], fresh["tn"], fresh["fp"]) == (
                claimed["tp"], claimed["fn"], claimed["tn"], claimed["fp"])
            assert f"| {split}: {v.backend}/{v.precision} | {fresh['n']} | {fresh['positives']} | " \
                   f"{fmt_proportion(fresh['sensitivity'])} | {fmt_proportion(fresh['specificity'])} |" in card
    assert manifest.lineage.code_revision and "Code revision: `" + manifest.lineage.code_revision in card


def test_tampered_real_package_is_refused_by_the_cli(tmp_path, key, capsys):
    build(DEMOS["head-ct"](quick=True), tmp_path / "out", key, tmp_path / "work", log=lambda line: None)
    pkg = tmp_path / "out" / "head-ct-ich-demo-1.0.0.tar"
    assert main(["verify", str(pkg), "--trusted-key", str(key.with_suffix(".pub"))]) == 0
    with tarfile.open(pkg) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    model = bytearray(members["model/fp32.onnx"])
    model[len(model) // 2] ^= 0xFF
    members["model/fp32.onnx"] = bytes(model)
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert main(["verify", str(bad), "--trusted-key", str(key.with_suffix(".pub"))]) == 1
    assert "hash mismatch for 'model/fp32.onnx'" in capsys.readouterr().err
    other = tmp_path / "other.key"
    main(["keygen", "--out", str(other)])
    with pytest.raises(PackageError, match="untrusted key"):
        verify_package(pkg, [other.with_suffix(".pub")])
    assert main(["sign", str(pkg), "--key", str(other)]) == 0
    assert verify_package(pkg, [other.with_suffix(".pub")]).id == "head-ct-ich-demo"


def test_generate_and_train_commands_write_a_loadable_checkpoint(tmp_path):
    from training.train import load_checkpoint

    assert main(["generate", "chest-cr", "--quick", "--out", str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "labels.csv").exists()
    assert main(["train", "chest-cr", "--quick", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.pt"),
                 "--epochs", "1"]) == 0
    model, meta = load_checkpoint(tmp_path / "m.pt")
    assert [r["epoch"] for r in meta["history"]] == [1] and model.config["in_channels"] == 1


def test_a_rebuild_from_the_same_seed_gives_the_same_metrics(tmp_path, key):
    """scripts/build-demo-models twice gives the same card figures: everything the
    manifest's ``metrics`` holds is a function of the seed."""
    manifests = []
    for run in ("a", "b"):
        info = build(DEMOS["chest-cr"](quick=True), tmp_path / run / "out", key, tmp_path / run / "work",
                     log=lambda line: None)
        manifests.append(verify_package(info["package"], [key.with_suffix(".pub")]))
    first, second = manifests
    assert first.metrics == second.metrics and first.metrics["test"]
    assert first.calibration == second.calibration and first.operating_point == second.operating_point
    assert first.lineage.dataset_manifest_sha256 == second.lineage.dataset_manifest_sha256
    assert [c.score for c in first.golden_series] == [c.score for c in second.golden_series]

"""Tiny end-to-end builds: data -> train -> export -> quantise -> evaluate -> sealed test -> package."""

import io
import json
import tarfile

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from appliance.drift.histograms import CT_EDGES, RADIOGRAPH_EDGES
from appliance.errors import PackageError
from appliance.models.package import extract_package, verify_package
from appliance.models.qualify import cam_top_overlap
from appliance.triage import pipeline
from training.__main__ import main
from training.backends import OPENVINO_OPTIONS, onnxruntime_runner, openvino_runner, run_batched
from training.card import fmt_proportion
from training.data.folder import series_jobs
from training.datasets import materialise
from training.demo import DEMOS
from training.errors import BuildError
from training.evaluate import operating_metrics
from training.sealed import ledger_lines


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "demo.key"
    assert main(["keygen", "--out", str(path)]) == 0
    return path


def _runner(folder, variant):
    path = folder / variant.files[0]
    return onnxruntime_runner(path) if variant.backend == "onnxruntime" else openvino_runner(path)


@pytest.mark.parametrize("model, edges", [("head-ct", CT_EDGES), ("chest-cr", RADIOGRAPH_EDGES)])
def test_a_quick_build_gives_a_verified_package_whose_card_claims_hold(tmp_path, key, quick_build, model, edges):
    info = quick_build(model, tmp_path, key, card_dir=tmp_path / "cards", command="test")
    spec = DEMOS[model](quick=True)
    pkg = tmp_path / "out" / f"{info['id']}-1.0.0.tar"
    manifest = verify_package(pkg, [key.with_suffix(".pub")])
    assert manifest.id == info["id"] and manifest.outputs.cam_size == manifest.input.size // 8
    built = {(v.backend, v.precision) for v in manifest.variants} | {(v.backend, v.precision) for v in manifest.excluded_variants}
    assert built == set(spec.variants) and ("onnxruntime", "fp32") in {(v.backend, v.precision) for v in manifest.variants}
    assert manifest.calibration is not None and manifest.calibration.a > 0
    op = manifest.operating_point
    assert op.chosen_on == "calibration split" and op.max_flag_rate == 0.2 and op.prevalence == 0.1
    assert op.meets_flag_rate == info["operating_point"]["meets_both"]
    assert set(manifest.metrics) == {"calibration", "gate", "test", "external"}
    kept = {f"{v.backend}/{v.precision}" for v in manifest.variants}
    assert all(set(by_variant) == kept for by_variant in manifest.metrics.values())
    assert manifest.golden_series and all(f.endswith(".dcm") for c in manifest.golden_series for f in c.files)

    # A demo build is an MLflow run like any other (issue 25): finished, with its test
    # metrics per variant and its card and package as artefacts.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(info["id"]).experiment_id])
    assert [r.info.run_id for r in runs] == [info["run_id"]] and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_name == "build 1.0.0"
    assert runs[0].data.tags["dataset_sha256"] == manifest.lineage.dataset_manifest_sha256
    assert runs[0].data.metrics["metrics.test.onnxruntime/fp32.tp"] == manifest.metrics["test"]["onnxruntime/fp32"]["tp"]
    artefacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"MODEL_CARD.md", "DATASET_CARD.md", "report.json", pkg.name} <= artefacts

    # Lineage: the development set and the sealed set by content hash, the code by revision.
    dev = materialise(spec.generator, tmp_path / "datasets")
    sealed = materialise(spec.sealed.generator, tmp_path / "datasets")
    assert manifest.lineage.dataset_manifest_sha256 == dev.sha256
    assert manifest.lineage.sealed_test_sha256 == sealed.sha256 != dev.sha256
    reads = ledger_lines(tmp_path / "sealed-ledger.tsv")
    assert len(reads) == 1 and reads[0]["sealed_sha256"] == sealed.sha256 and reads[0]["purpose"] == "build"
    assert reads[0]["model"] == f"{spec.id} 1.0.0" and "sensitivity" in reads[0]["figures"]

    dest = tmp_path / "installed"
    extract_package(pkg, dest, [key.with_suffix(".pub")])
    golden = np.load(dest / manifest.golden, allow_pickle=False)
    assert golden["input"].shape[1:] == (manifest.input.channels, manifest.input.size, manifest.input.size)
    for v in manifest.variants:
        assert v.options == (OPENVINO_OPTIONS if v.backend == "openvino" else {})
        score, cam = _runner(dest, v)(golden["input"])
        assert np.max(np.abs(score - golden["score"])) <= v.tolerance.score_atol
        assert cam_top_overlap(golden["cam"], cam) >= v.tolerance.cam_min_overlap
    drift = json.loads((dest / manifest.drift_reference).read_text())
    assert set(drift["histograms"]) == set(edges) and sum(next(iter(drift["histograms"].values()))["counts"]) > 0

    card = (tmp_path / "cards" / f"{info['id']}.md").read_text()
    assert (dest / manifest.model_card).read_text() == card
    first = card.splitlines()[2]
    meets = all(v["meets"] for v in info["verdicts"].values())
    assert first.startswith("**Meets its target**" if meets else "**Does not meet its target**")
    assert "NOT FOR DIAGNOSTIC USE" in card and "## Indication" in card and "What it is not for" in card
    assert "Flags per true positive" in card and "NPV" not in card and "Stability of the flags" in card
    assert f"sealed test set: `{sealed.sha256}`" in card and manifest.lineage.code_revision in card

    # The card's and the manifest's claims against a fresh scoring of the sealed set by the
    # installed package, through the box's own pipeline.
    jobs = series_jobs(sealed.path, manifest.input)
    classes = np.array([j.row["indication"] for j in jobs])
    for v in manifest.variants:
        run = _runner(dest, v)
        scores = np.array([manifest.series_score(run_batched(run, pipeline.prepare(manifest, j.paths).inputs)[0])
                           for j in jobs])
        fresh = operating_metrics(classes, scores, op.threshold, seed=spec.train.seed)
        claimed = manifest.metrics["test"][f"{v.backend}/{v.precision}"]
        assert [fresh[k] for k in ("tp", "fn", "tn", "fp", "sub_flagged")] == [
            claimed[k] for k in ("tp", "fn", "tn", "fp", "sub_flagged")]
        assert (f"| {v.backend}/{v.precision} | {fmt_proportion(fresh['sensitivity'])} | "
                f"{fmt_proportion(fresh['specificity'])} |") in card


def test_a_release_is_refused_before_anything_is_read(tmp_path, key, quick_build):
    with pytest.raises(BuildError, match="uncommitted changes|not registered"):
        quick_build("chest-cr", tmp_path, key, release=True)
    assert not ledger_lines(tmp_path / "sealed-ledger.tsv")
    assert not (tmp_path / "out").exists()


def test_tampered_real_package_is_refused_by_the_cli(tmp_path, key, quick_build, capsys):
    quick_build("head-ct", tmp_path, key)
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


def test_a_rebuild_from_the_same_seed_gives_the_same_metrics(tmp_path, key, quick_build):
    """A build twice gives the same card figures: everything the manifest's ``metrics``
    holds is a function of the seed; the second build reads the cached datasets."""
    manifests = []
    for run in ("a", "b"):
        info = quick_build("chest-cr", tmp_path, key, out=tmp_path / run / "out", work=tmp_path / run / "work")
        manifests.append(verify_package(info["package"], [key.with_suffix(".pub")]))
    first, second = manifests
    assert first.metrics == second.metrics and first.metrics["test"]
    assert first.calibration == second.calibration and first.operating_point == second.operating_point
    assert first.lineage == second.lineage
    assert [c.score for c in first.golden_series] == [c.score for c in second.golden_series]
    assert len(ledger_lines(tmp_path / "sealed-ledger.tsv")) == 2  # every read logged

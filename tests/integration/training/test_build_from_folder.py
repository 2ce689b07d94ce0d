"""``python -m training build SPEC --data FOLDER``: a model trained from a labelled folder the
test writes with pydicom, tracked in MLflow, its dataset card beside its model card."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from mlflow.tracking import MlflowClient

from appliance.models.package import extract_package, verify_package
from tests.helpers.labelled_folder import write_folder, write_spec
from training.__main__ import main
from training.datasets import content_sha256
from training.hub.__main__ import main as hub
from training.hub.repository import Repository
from training.mixed_stream import folder_through_appliance
from training.sealed import ledger_lines


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder-build")
    rows = write_folder(root / "dev", seed=1, patients=48)
    write_folder(root / "sealed", seed=2, patients=20)
    # Dealt by a split file: patients 0-23 train, 24-29 val, 30-39 calibration, 40-47 gate.
    deal = ["train"] * 24 + ["val"] * 6 + ["calibration"] * 10 + ["gate"] * 8
    (root / "splits.csv").write_text("series_instance_uid,split\n" + "".join(
        f"{r['series_instance_uid']},{split}\n" for r, split in zip(rows, deal)))
    spec = write_spec(root, splits='file = "splits.csv"')
    uri = f"sqlite:///{root}/mlflow.db"
    argv = ["build", str(spec), "--data", str(root / "dev"), "--out", str(root / "out"), "--work", str(root / "work"),
            "--tracking-uri", uri, "--ledger", str(root / "ledger.tsv"), "--card-dir", str(root / "cards")]
    assert main(argv) == 0
    return root, uri


def test_a_folder_build_signs_a_package_with_the_specs_code_routing_and_the_ranges_found(built):
    root, _ = built
    package = root / "out" / "disc-finder-test-0.1.0.tar"
    manifest = verify_package(package, [root / "work" / "build-signing.pub"])
    assert manifest.finding_code == ("T-D0050", "99TEST", "Bright disc")
    c = manifest.input_constraints
    assert c is not None and (c.rows.min, c.rows.max) == (48, 48) and (c.pixel_spacing_mm.min, c.pixel_spacing_mm.max) == (0.5, 0.5)
    assert c.view_positions == ["PA"] and c.contrast == "none" and c.slice_count.max == 1
    assert (c.patient_age_years.min, c.patient_age_years.max) == (40, 69)
    assert manifest.provenance["proposed_routing"]["model"] == "disc-finder-test"
    assert manifest.lineage.dataset_manifest_sha256 == content_sha256(root / "dev")
    assert manifest.lineage.sealed_test_sha256 == content_sha256(root / "sealed")
    reads = ledger_lines(root / "ledger.tsv")
    assert [r["sealed_set"] for r in reads] == ["disc-sealed"] and "sensitivity" in reads[0]["figures"]
    # The given folder is never written to: its input cache sits in the work folder.
    assert not any(p.name.startswith("inputs-") for p in (root / "dev").iterdir())

    dest = root / "installed"
    extract_package(package, dest, [root / "work" / "build-signing.pub"])
    card = json.loads((root / "work" / "dataset.json").read_text())
    assert card["content_sha256"] == content_sha256(root / "dev") and card["series"] == 48
    assert card["indication"] == {"in-indication": 24, "negative": 24}
    assert card["subgroups"]["site"] == {"north": 32, "south": 16} and card["scanner"] == {"Northwind NW-1": 24,
                                                                                            "Southgate SG-2": 24}
    assert card["pixel_spacing_mm"] == {"0.5": 48}
    assert card["split"] == {"train": 24, "val": 6, "calibration": 10, "gate": 8, "external": 0}
    assert f"Splits, disjoint by patient (from the split file `{root / 'splits.csv'}`)" in (dest / "MODEL_CARD.md").read_text()
    assert (dest / "DATASET_CARD.md").read_text() == (root / "work" / "DATASET_CARD.md").read_text()
    assert (root / "cards" / "disc-finder-test.dataset.md").exists() and "| north | 32 |" in (dest / "DATASET_CARD.md").read_text()


def test_the_build_is_an_mlflow_run_with_its_hashes_metrics_and_artefacts(built):
    root, uri = built
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("disc-finder-test").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["dataset_sha256"] == content_sha256(root / "dev")
    assert run.data.tags["sealed_test_sha256"] == content_sha256(root / "sealed")
    assert run.data.tags["code_revision"]
    assert run.data.params["data_folder"] == str(root / "dev") and run.data.params["spec.train.epochs"] == "8"
    assert "metrics.test.onnxruntime/fp32.auc" in run.data.metrics
    assert run.data.metrics["metrics.calibration.onnxruntime/fp32.in_indication"] > 0
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"MODEL_CARD.md", "DATASET_CARD.md", "dataset.json", "report.json", "disc-finder-test-0.1.0.tar"} <= artefacts


def test_the_package_installs_on_a_box_that_triages_the_sealed_folder_with_the_specs_code(built):
    """On a real appliance (installed and activated through its command, the spec's proposed
    routing rule): every sealed series triaged, the flags those the card counted. The
    finding's words are in no table of the box: its SR states the spec's code."""
    root, _ = built
    package = root / "out" / "disc-finder-test-0.1.0.tar"
    manifest = verify_package(package, [root / "work" / "build-signing.pub"])
    labels = {r["series_instance_uid"]: r["label"] == "1" for r in csv.DictReader(open(root / "sealed" / "labels.csv"))}
    series, active = folder_through_appliance(package, root / "work" / "build-signing.pub", "disc-finder-test",
                                              root / "sealed", len(labels), root / "box",
                                              routing=manifest.provenance["proposed_routing"])
    assert active["version"] == "0.1.0"
    assert {s["state"] for s in series.values()} == {"triaged"} and set(series) == set(labels)
    test = manifest.metrics["test"]["onnxruntime/fp32"]
    assert sum(bool(s["flag"]) and labels[u] for u, s in series.items()) == test["tp"]
    assert sum(bool(s["flag"]) and not labels[u] for u, s in series.items()) == test["fp"]


def test_the_hub_publishes_the_package_a_tracked_run_logged(built, capsys):
    root, uri = built
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("disc-finder-test").experiment_id])[0]
    common = ["--data-dir", str(root / "hub"), "--trusted-key", str(root / "work" / "build-signing.pub")]
    assert hub(["publish", "--run", "0" * 32, "--tracking-uri", uri, *common]) == 2
    assert f"no MLflow run {'0' * 32}" in capsys.readouterr().err
    assert hub(["publish", "--run", run.info.run_id, "--tracking-uri", uri, *common]) == 0
    assert f"from MLflow run {run.info.run_id}" in capsys.readouterr().out
    published = (Repository(root / "hub").targets_dir / "disc-finder-test-0.1.0.tar").read_bytes()
    assert published == (root / "out" / "disc-finder-test-0.1.0.tar").read_bytes()


def test_a_folder_sharing_patients_with_the_sealed_set_is_refused_before_training(built, tmp_path, capsys):
    root, _ = built
    shutil.copytree(root / "sealed", tmp_path / "sealed")
    argv = ["build", str(write_spec(tmp_path)), "--data", str(tmp_path / "sealed"), "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--ledger", str(tmp_path / "ledger.tsv")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"build refused: {tmp_path / 'sealed'}: 20 series are of patients also in the sealed set" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ledger.tsv").exists()
    assert not (tmp_path / "work" / "model" / "model.pt").exists()


def test_a_bad_folder_is_refused_with_every_reason_before_training(tmp_path, capsys):
    write_folder(tmp_path / "bad", seed=9, patients=8)
    (tmp_path / "bad" / "P000" / "IM0001.dcm").write_bytes(b"not dicom")
    argv = ["build", str(write_spec(tmp_path)), "--data", str(tmp_path / "bad"), "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"2 problem(s) found before training:\n  {tmp_path / 'bad' / 'P000' / 'IM0001.dcm'}: not a DICOM file" in err
    assert f"{tmp_path / 'bad' / 'labels.csv'}:2: series_instance_uid" in err and "has no DICOM file in the folder" in err
    assert not (tmp_path / "work" / "model" / "model.pt").exists()


def test_an_experiment_on_the_folder_is_a_run_without_a_package(built, tmp_path, capsys):
    root, _ = built
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["experiment", str(root / "disc.toml"), "--name", "one-epoch", "--data", str(root / "dev"),
                 "--work", str(tmp_path / "work"), "--tracking-uri", uri, "--set", "train.epochs=1"]) == 0
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("disc-finder-test").experiment_id])[0]
    assert run.info.run_name == "experiment one-epoch" and run.data.params["spec.train.epochs"] == "1"
    assert run.data.tags["dataset_sha256"] == content_sha256(root / "dev")
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["experiment.json"]
    assert hub(["publish", "--run", run.info.run_id, "--tracking-uri", uri, "--data-dir", str(tmp_path / "hub")]) == 2
    assert "logged 0 packages, not one: only a build run is published, never an experiment" in capsys.readouterr().err

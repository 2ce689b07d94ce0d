"""MLflow runs of builds and experiments, in a local SQLite store."""

from mlflow.tracking import MlflowClient

from training.tracking import Run, flatten, numeric


def test_flatten_and_numeric_keep_finite_numbers_under_dotted_names():
    values = {"a": 1, "b": {"c": 0.5, "d": None, "e": float("nan"), "f": True, "g": "text"}}
    assert flatten(values) == {"a": 1, "b.c": 0.5, "b.d": None, "b.e": values["b"]["e"], "b.f": True, "b.g": "text"}
    assert numeric(values) == {"a": 1.0, "b.c": 0.5, "b.f": 1.0}


def test_a_run_records_params_metrics_tags_and_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = Run("head-ct-ich-demo", "build 1.0.0", uri, tags={"code_revision": "abc123"})
    run.params({"train": {"epochs": 16, "widths": [8, 16]}})
    run.metrics({"test": {"onnxruntime/fp32": {"auc": 0.97}}})
    run.metrics({"val_loss": 0.4}, step=3)
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# card")
    run.artifact(card)
    run.end()
    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("head-ct-ich-demo").experiment_id])
    assert len(found) == 1 and found[0].info.status == "FINISHED" and found[0].info.run_name == "build 1.0.0"
    assert found[0].data.params == {"train.epochs": "16", "train.widths": "[8, 16]"}
    assert found[0].data.metrics == {"test.onnxruntime/fp32.auc": 0.97, "val_loss": 0.4}
    assert found[0].data.tags["code_revision"] == "abc123"
    assert [a.path for a in client.list_artifacts(found[0].info.run_id)] == ["MODEL_CARD.md"]
    assert [m.step for m in client.get_metric_history(found[0].info.run_id, "val_loss")] == [3]

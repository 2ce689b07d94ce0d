"""MLflow runs of builds and experiments, in a local SQLite store."""

import os
import signal

import pytest
from mlflow.tracking import MlflowClient

from training.tracking import Run, Terminated, flatten, numeric


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


def _status(uri: str, run: Run) -> str:
    return MlflowClient(uri).get_run(run.run_id).info.status


def _ended_in_finally(run: Run, interruption: BaseException | None) -> None:
    """As ``training.build.build`` ends its run: ``run.end(ok)`` in a ``finally``."""
    ok = False
    try:
        if interruption is not None:
            raise interruption
        ok = True
    finally:
        run.end(ok)


def test_an_interrupted_build_ends_its_run_killed_and_a_failed_one_failed(tmp_path):
    """Issue 25: a Ctrl-C used to leave the run FAILED like a broken build (and a SIGTERM
    left it RUNNING for ever)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = {name: Run("m", name, uri) for name in ("interrupted", "failed", "finished")}
    with pytest.raises(KeyboardInterrupt):
        _ended_in_finally(runs["interrupted"], KeyboardInterrupt())
    with pytest.raises(ValueError):
        _ended_in_finally(runs["failed"], ValueError("bad data"))
    _ended_in_finally(runs["finished"], None)
    assert {name: _status(uri, run) for name, run in runs.items()} == {
        "interrupted": "KILLED", "failed": "FAILED", "finished": "FINISHED"}


def test_a_sigterm_during_a_run_ends_it_killed_and_the_process_still_exits(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    run = Run("m", "build 1.0.0", uri)
    ok = False
    with pytest.raises(Terminated) as raised:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            ok = True
        finally:
            run.end(ok)
    assert raised.value.code == 128 + signal.SIGTERM and isinstance(raised.value, SystemExit)
    assert _status(uri, run) == "KILLED"
    # the run's end gives SIGTERM its default action back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_handler_set_by_someone_else_is_left_alone(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        run = Run("m", "build 1.0.0", f"sqlite:///{tmp_path}/mlflow.db")
        os.kill(os.getpid(), signal.SIGTERM)
        run.end()
        assert seen == [signal.SIGTERM] and _status(f"sqlite:///{tmp_path}/mlflow.db", run) == "FINISHED"
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Every build and experiment as an MLflow run: parameters, dataset hashes, code revision,
metrics per split and variant, and the card and package as artefacts.

The store is local by default: SQLite at ``var/mlflow/mlflow.db`` in the repository, with
artefacts beside it in ``var/mlflow/artifacts`` (list the runs with ``mlflow runs list
--experiment-id ID`` or ``mlflow ui --backend-store-uri sqlite:///var/mlflow/mlflow.db``);
``--tracking-uri`` (or ``MLFLOW_TRACKING_URI``) names a server instead. Nested parameters
and metrics are flattened to dotted names (``metrics.test.openvino/int8.sensitivity``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
#: MLflow's limit on a parameter value's length.
MAX_PARAM_CHARS = 6000
#: MLflow's limits on one ``log_batch`` call.
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000


class Terminated(SystemExit):
    """SIGTERM while a :class:`Run` is open, raised in the main thread so that the build's
    ``finally`` ends its run (KILLED) before the process exits, with ``128 + SIGTERM``."""


#: What interrupts a run rather than failing it: its end records KILLED, not FAILED.
INTERRUPTIONS = (KeyboardInterrupt, Terminated)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def default_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the SQLite store under ``var/mlflow``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPOSITORY / 'var' / 'mlflow' / 'mlflow.db'}"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys; lists and tuples as their text (pure)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among flattened ``values`` (booleans as 0/1), for ``log_metrics`` (pure)."""
    out = {}
    for key, value in flatten(values).items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            out[key] = float(value)
    return out


class Run:
    """One MLflow run in an experiment; created on construction, ended by :meth:`end`.

    While it is open (in the main thread, where SIGTERM had its default action), SIGTERM
    raises :class:`Terminated`, so an interrupted build ends its run KILLED instead of
    leaving it RUNNING.

    Parameters
    ----------
    experiment : str
        Experiment name (e.g. the model id); created with its artefacts beside a local store.
    name : str
        The run's name (e.g. ``build 1.3.0`` or an experiment's tag).
    uri : str, optional
        Tracking URI; :func:`default_uri` when ``None``.
    tags : dict, optional
        Tags set on the run (code revision, dataset hashes, command).
    """

    def __init__(self, experiment: str, name: str, uri: str | None = None, tags: dict[str, str] | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri or default_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            artifacts = None
            if self.uri.startswith("sqlite:///"):
                artifacts = (Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
            experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=name,
                                             tags={k: str(v) for k, v in (tags or {}).items()}).info.run_id
        self._catches_sigterm = False
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            # a SIGTERM would otherwise kill the process before any ``finally``, leaving the
            # run RUNNING in the store for ever; a handler someone else set is left alone
            signal.signal(signal.SIGTERM, _terminate)
            self._catches_sigterm = True

    def params(self, values: dict[str, Any]) -> None:
        """Log parameters (flattened; values as text, cut to MLflow's limit)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(values).items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + PARAMS_PER_BATCH])

    def metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        """Log every finite number of ``values`` (flattened) as a metric."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step or 0) for k, v in numeric(values).items()]
        for start in range(0, len(items), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start:start + METRICS_PER_BATCH])

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        """Copy a file into the run's artefacts."""
        self.client.log_artifact(self.run_id, str(path), folder)

    def end(self, ok: bool = True) -> None:
        """End the run: FINISHED when ``ok``; otherwise KILLED when called while an
        interruption (Ctrl-C, SIGTERM: :data:`INTERRUPTIONS`) propagates, as from a
        ``finally`` the interruption passes through, else FAILED."""
        if (self._catches_sigterm and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is _terminate):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._catches_sigterm = False
        interrupted = isinstance(sys.exc_info()[1], INTERRUPTIONS)
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED" if interrupted else "FAILED")


def package_of_run(run_id: str, dest: Path, uri: str | None = None) -> Path:
    """The signed package a finished build run logged, downloaded into ``dest``.

    Raises
    ------
    ValueError
        The run does not exist, did not finish, or logged no package (an experiment).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or default_uri())
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"no MLflow run {run_id} in {uri or default_uri()}") from exc
    if run.info.status != "FINISHED":
        raise ValueError(f"MLflow run {run_id} is {run.info.status}, not FINISHED: only a completed build is published")
    packages = [a.path for a in client.list_artifacts(run_id) if a.path.endswith(".tar")]
    if len(packages) != 1:
        raise ValueError(f"MLflow run {run_id} ({run.info.run_name}) logged {len(packages)} packages, not one: "
                         "only a build run is published, never an experiment")
    Path(dest).mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, packages[0], str(dest)))

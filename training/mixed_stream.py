"""How often a real appliance flags a realistic mixed stream with a freshly built package.

A card states the flag rate to expect at 10 % prevalence. This module checks it the way a
hospital would meet it: a stream the build never saw (the package's generator at a seed of
its own, every scanner style, every slice thickness in equal shares, 10 % of patients with a
finding) is sent over DICOM to a real appliance on loopback (``appliance serve`` in a
child process with its own data folder, the package installed and activated through the
``appliance`` command, which golden-tests every variant and picks one as a box does), one
association per series; when every series has ended in a final state the flags are read
from ``appliance status --json``. Nothing of the appliance is imported: it runs as the
product does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pynetdicom import AE

from appliance.states import SeriesState
from training.data.cr_synth import CRConfig
from training.data.ct_synth import CTConfig
from training.data.folder import read_labels
from training.datasets import materialise
from training.errors import BuildError
from training.evaluate import operating_metrics, proportion

#: Prevalence of the stream (share of patients with a finding of any size).
STREAM_PREVALENCE = 0.10
#: Seconds every series of the stream may take to reach a final state once sent.
STREAM_DEADLINE_S = 1800.0
FINAL_STATES = (SeriesState.TRIAGED, SeriesState.NOT_ELIGIBLE, SeriesState.FAILED)
REPOSITORY = Path(__file__).resolve().parents[1]


def stream_config(generator: CTConfig | CRConfig, n_series: int, seed: int,
                  prevalence: float = STREAM_PREVALENCE) -> CTConfig | CRConfig:
    """The package's generator with a new seed and size, ``prevalence`` patients with a
    finding and, for CT, every slice thickness equally likely (pure)."""
    if isinstance(generator, CTConfig):
        return replace(generator, n_patients=n_series, seed=seed, positive_fraction=prevalence, thickness_weights=None)
    return replace(generator, n_patients=n_series, seed=seed, positive_fraction=prevalence)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _appliance(*args: str, env: dict[str, str], check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPOSITORY, capture_output=True,
                          text=True, check=check, timeout=timeout)


def _send(files: list[Path], port: int) -> dict[Path, str]:
    """C-STORE ``files`` to the appliance in one association; why, for each instance the
    appliance did not acknowledge with success (empty when all were)."""
    datasets = [pydicom.dcmread(p) for p in files]
    ae = AE(ae_title="STREAM")
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [str(datasets[0].file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    if not assoc.is_established:
        return dict.fromkeys(files, "association refused or aborted before the first C-STORE")
    problems: dict[Path, str] = {}
    try:
        ended = False
        for path, ds in zip(files, datasets):
            if ended or not assoc.is_established:
                problems[path] = "not sent, the association had ended"
                continue
            status = getattr(assoc.send_c_store(ds), "Status", None)
            if status is None:  # aborted or timed out: nothing more goes over this association
                problems[path], ended = "no response (association aborted or timed out)", True
            elif status != 0x0000:
                problems[path] = f"status 0x{status:04X}"
    finally:
        if assoc.is_established:
            assoc.release()
    return problems


def _send_series(folder: Path, port: int, log_path: Path, log: Callable[[str], None]) -> None:
    """Send one series in one association, as a modality does; instances the appliance did
    not acknowledge are logged with the reason and sent once more in a new association
    (a C-STORE of the same SOP instance is idempotent on the box). Raises BuildError with
    every reason and the end of the appliance's log when the second try falls short too."""
    files = sorted(folder.rglob("*.dcm"))
    problems = _send(files, port)
    if not problems:
        return
    first, why = next(iter(problems.items()))
    log(f"mixed stream: {folder.name}: {len(problems)} of {len(files)} instances not acknowledged "
        f"({first.name}: {why}); sending them again in a new association")
    retry = _send(list(problems), port)
    if retry:
        reasons = "; ".join(f"{path.relative_to(folder)}: {why}" for path, why in list(retry.items())[:3])
        raise BuildError(f"the appliance did not acknowledge {len(retry)} of {len(files)} instances of {folder.name} "
                         f"after one retry: {reasons}. End of the appliance's log:\n"
                         f"{log_path.read_text(errors='replace')[-2000:]}")


def mixed_stream_through_appliance(package: Path, public_key: Path, spec, work_dir: Path, datasets: Path | None = None,
                                   log: Callable[[str], None] = print) -> dict:
    """Send the spec's mixed stream to a real appliance running ``package``; the flags it
    raised, against the stream's truth.

    Returns a JSON-able dict: ``seed``, ``prevalence``, ``series``, ``positives`` (series with
    a finding), ``flagged``, ``flag_rate`` and ``not_analysed`` (series that ended in any
    state but triaged; both :func:`training.evaluate.proportion`), ``variant``
    (backend/device/precision the appliance chose), ``metrics``
    (:func:`training.evaluate.operating_metrics` on the stream's classes), ``states``
    (series per final state), ``by_acquisition`` (series, findings, flagged per
    slice-thickness group, CT only) and ``seconds``.
    """
    started = time.perf_counter()
    config = stream_config(spec.generator, spec.mixed_stream_series, spec.mixed_stream_seed)
    stream = materialise(config, datasets, log)
    _, labels = read_labels(stream.path / "labels.csv")
    status, active = folder_through_appliance(package, public_key, spec.id, stream.path, len(labels), work_dir,
                                              log=log)
    series = status
    uids = sorted(labels)
    flags = np.array([bool(series[u].get("flag")) for u in uids])
    classes = np.array([labels[u].get("indication") or ("in-indication" if labels[u]["label"] == "1" else "negative")
                        for u in uids])
    states: dict[str, int] = {}
    for u in uids:
        states[series[u]["state"]] = states.get(series[u]["state"], 0) + 1
    groups: dict[str, dict[str, int]] = {}
    for u, flag in zip(uids, flags):
        name = labels[u].get("acquisition")
        if name:
            g = groups.setdefault(name, {"series": 0, "findings": 0, "flagged": 0})
            g["series"] += 1
            g["findings"] += int(labels[u]["label"] == "1")
            g["flagged"] += int(flag)
    variant = (active.get("selection") or {}).get("chosen") or "unknown"
    return {
        "seed": config.seed, "prevalence": STREAM_PREVALENCE, "series": len(uids),
        "positives": int(sum(labels[u]["label"] == "1" for u in uids)), "flagged": int(flags.sum()),
        "flag_rate": proportion(int(flags.sum()), len(uids), minimum=1), "variant": variant,
        "not_analysed": proportion(len(uids) - states.get(SeriesState.TRIAGED.value, 0), len(uids), minimum=1),
        "metrics": operating_metrics(classes, flags.astype(float), 0.5), "states": states,
        "by_acquisition": dict(sorted(groups.items())), "seconds": round(time.perf_counter() - started, 1),
    }


def folder_through_appliance(package: Path, public_key: Path, model_id: str, folder: Path, expected: int,
                             work_dir: Path, routing: dict | None = None,
                             log: Callable[[str], None] = print) -> tuple[dict[str, dict], dict]:
    """Install ``package`` on a fresh appliance (``work_dir``), send it every DICOM file of
    ``folder`` (one association per top-level subfolder), wait until ``expected`` series
    are final; returns (``status --json``'s series by Series Instance UID, the active model
    as ``models list`` gives it). ``routing``: a rule (RoutingRule's fields) for the
    routing file, else the product's shipped one. ``log`` hears an instance sent again."""
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "data").mkdir(parents=True)
    port = _free_port()
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(work_dir / "data"), "APPLIANCE_DICOM_PORT": str(port),
           "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1", "APPLIANCE_DICOM_PEERS": "*@127.0.0.1",
           "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "64", "APPLIANCE_WEB_PORT": str(_free_port()),
           "APPLIANCE_WEB_BIND_ADDRESS": "127.0.0.1", "APPLIANCE_MODELS_TRUSTED_KEYS": str(public_key),
           # A build's scratch box holds synthetic studies only, in the build's work folder.
           "APPLIANCE_ALLOW_UNENCRYPTED": "true"}
    if routing is not None:
        rule = "\n".join(f"{k} = {json.dumps(v)}" for k, v in {**routing, "model": model_id}.items())
        (work_dir / "routing.toml").write_text(f"[[rule]]\n{rule}\n")
        env["APPLIANCE_WORKER_ROUTING_FILE"] = str(work_dir / "routing.toml")
    _appliance("models", "install", str(package), "--activate", env=env)
    listed = json.loads(_appliance("models", "list", "--json", env=env).stdout)
    active = next(m for m in listed if m.get("state") == "active" and m.get("id") == model_id)
    log_path = work_dir / "serve.log"
    with open(log_path, "wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve"], env=env, cwd=REPOSITORY,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, serve, log_path)
        for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("inputs-")):
            _send_series(sub, port, log_path, log)
        status = _wait_final(env, expected, serve, log_path)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
    return {s["series_instance_uid"]: s for s in status["series"]}, active


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BuildError(f"appliance serve exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise BuildError(f"appliance serve did not listen on port {port} within {timeout:.0f} s")


def _wait_final(env: dict[str, str], expected: int, process: subprocess.Popen, log_path: Path) -> dict:
    """``status --json`` once every one of ``expected`` series is in a final state."""
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while True:
        if process.poll() is not None:
            raise BuildError(f"appliance serve exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        status = json.loads(_appliance("status", "--json", env=env).stdout)
        final = [s for s in status["series"] if s["state"] in FINAL_STATES]
        if len(final) >= expected:
            return status
        if time.monotonic() > deadline:
            raise BuildError(f"only {len(final)} of {expected} stream series reached a final state within "
                             f"{STREAM_DEADLINE_S:.0f} s")
        time.sleep(2.0)

"""kill -9 of the worker in the middle of a series: the restarted worker takes the series
back at once (not after the dead one's 300 s lease) and triages it once, one audit row."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from tests.support import REPO, ApplianceProcess, tcp_env
from training.data.ct_synth import CTConfig, generate_ct_dataset


def series_state(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT state, reason FROM series").fetchone()
    if row and row[0] == "failed":
        raise AssertionError(f"series failed: {row[1]}")
    return row[0] if row else ""


def test_worker_killed_mid_series_triages_it_once_after_restart(tmp_path, quick_packages):
    listener = ApplianceProcess(tmp_path / "data", dicom_quiet_period_s="30").start()
    db_path = listener.data_dir / "appliance.db"
    registry = ModelRegistry(open_database(db_path), listener.data_dir / "models", [quick_packages["public_key"]])
    model = registry.install(quick_packages["head-ct"], "test")
    registry.activate(model.id, model.version, "test")

    generate_ct_dataset(CTConfig(n_patients=1, seed=21, matrix=512), tmp_path / "ct", workers=1)
    files = sorted((tmp_path / "ct").glob("*/CT/*.dcm"))
    subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(listener.port), *map(str, files)],
                   env=tcp_env(), check=True, timeout=120, capture_output=True)
    deadline = time.monotonic() + 20
    while series_state(db_path) != "queued" and time.monotonic() < deadline:
        time.sleep(0.1)

    # Default timeouts (series 120 s, lease 300 s): the restarted worker must not wait for
    # the dead one's lease to run out, and a slow machine must not time the series out.
    env = {**listener.env, "APPLIANCE_MODELS_TRUSTED_KEYS": str(quick_packages["public_key"])}

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "appliance.cli", "worker"], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    first = start_worker()
    deadline = time.monotonic() + 30
    while series_state(db_path) != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert series_state(db_path) == "running"
    first.kill()  # SIGKILL mid-series
    first.wait(timeout=10)
    assert series_state(db_path) == "running"

    second = start_worker()
    try:
        deadline = time.monotonic() + 200  # well under the 300 s lease the old code waited for
        while series_state(db_path) != "triaged" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        second.terminate()
        second.wait(timeout=30)
        listener.stop()
    assert series_state(db_path) == "triaged"
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'inference'").fetchone()[0] == 1
        assert db.execute("SELECT state, attempts FROM jobs").fetchall() == [("done", 2)]
        assert db.execute("SELECT COUNT(*) FROM inference_results").fetchone()[0] == 1

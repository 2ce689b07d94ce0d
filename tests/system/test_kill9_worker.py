"""kill -9 of the worker in the middle of a series: the restarted worker takes the series
back at once (not after the dead one's 300 s lease) and triages it once, one audit row."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from scripts.harness import REPO, ApplianceProcess, tcp_env, wait_until
from tests.helpers.series import ROUTINE_SLICES
from training.data.ct_synth import CTConfig, generate_ct_dataset


def series_state(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT state, reason FROM series").fetchone()
    if row and row[0] == "failed":
        raise AssertionError(f"series failed: {row[1]}")
    return row[0] if row else ""


def stored_paths(db_path: Path) -> list[Path]:
    with sqlite3.connect(db_path) as db:
        return [Path(path) for (path,) in db.execute("SELECT path FROM instances")]


def test_worker_killed_mid_series_triages_it_once_after_restart(tmp_path, quick_packages):
    listener = ApplianceProcess(tmp_path / "data", dicom_quiet_period_s="30").start()
    try:
        db_path = listener.data_dir / "appliance.db"
        registry = ModelRegistry(open_database(db_path), listener.data_dir / "models", [quick_packages["public_key"]])
        model = registry.install(quick_packages["head-ct"], "test")
        registry.activate(model.id, model.version, "test")

        generate_ct_dataset(CTConfig(n_patients=1, seed=21, matrix=512, **ROUTINE_SLICES), tmp_path / "ct", workers=1)
        files = sorted((tmp_path / "ct").glob("*/CT/*.dcm"))
        subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(listener.port), *map(str, files)],
                       env=tcp_env(), check=True, timeout=120, capture_output=True)
        wait_until(lambda: series_state(db_path) == "queued", what="the series to be queued")

        # Hold the first worker mid-series whatever the machine's speed: each stored instance
        # is swapped for a named pipe nobody writes, so the worker's first read of the series
        # blocks after it has claimed the job. The files come back before the second worker.
        aside = tmp_path / "aside"
        aside.mkdir()
        stored = stored_paths(db_path)
        for path in stored:
            os.replace(path, aside / path.name)
            os.mkfifo(path)

        # Default timeouts (series 120 s, lease 300 s): the restarted worker must not wait for
        # the dead one's lease to run out, and a slow machine must not time the series out.
        env = {**listener.env, "APPLIANCE_MODELS_TRUSTED_KEYS": str(quick_packages["public_key"])}

        def start_worker() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "appliance.cli", "worker"], env=env, cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        first = start_worker()
        try:
            wait_until(lambda: series_state(db_path) == "running", what="the first worker to claim the job")
        finally:
            first.kill()  # SIGKILL mid-series
            first.wait(timeout=60)
        assert series_state(db_path) == "running"
        for path in stored:
            path.unlink()
            os.replace(aside / path.name, path)

        second = start_worker()
        try:
            # Well under the 300 s lease the old code waited for.
            wait_until(lambda: series_state(db_path) == "triaged", timeout=200,
                       what="the second worker to triage the series", interval=0.2)
        finally:
            second.terminate()
            second.wait(timeout=60)
        with sqlite3.connect(db_path) as db:
            assert db.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'inference'").fetchone()[0] == 1
            assert db.execute("SELECT state, attempts FROM jobs").fetchall() == [("done", 2)]
            assert db.execute("SELECT COUNT(*) FROM inference_results").fetchone()[0] == 1
    finally:
        listener.stop()

"""The worker prepares a series' instances while it is still arriving (over real DICOM
associations into a real listener), its job uses them, and a worker that died with its
cache loses nothing else: the series is triaged on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.triage import pipeline
from scripts.harness import ApplianceProcess, wait_until
from tests.helpers.dimse import queued_series, send, listener_with_head_ct
from tests.helpers.series import head_ct


@pytest.fixture
def box(tmp_path, quick_packages):
    """A running listener, the quick head-CT model active, and worker settings for its data."""
    listener, settings, db, model = listener_with_head_ct(tmp_path / "data", quick_packages)
    yield listener, settings, db, model
    listener.stop()


def prepare_everything(worker) -> int:
    prepared = 0
    while count := worker.prepare_arrivals():
        prepared += count
    return prepared


def audited_input(db, series_uid: str) -> str:
    rows = [json.loads(p) for (p,) in db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'inference'")]
    return next(r["input_sha256"] for r in rows if r["series_instance_uid"] == series_uid)


def test_a_job_uses_what_was_prepared_and_a_dead_workers_cache_costs_nothing(box, tmp_path, monkeypatch):
    listener, settings, db, model = box
    first, second = head_ct(tmp_path / "a", seed=31), head_ct(tmp_path / "b", seed=32)
    send(listener, first)
    [entry] = queued_series(listener, 1)
    uid = entry["series_instance_uid"]
    stored = [p for (p,) in db.conn.execute(
        "SELECT path FROM instances WHERE series_instance_uid = ? ORDER BY received_at", (uid,))]
    whole = pipeline.prepare(model.manifest, [Path(p) for p in stored])

    # The worker that prepared the series dies with its cache before taking the job.
    dying = Parts(settings).worker(db, name="dying")
    assert prepare_everything(dying) == len(first)
    assert dying.triage.prepared.series() == {uid}
    del dying

    survivor = Parts(settings).worker(db, name="survivor")
    assert survivor.run_once()
    assert listener.status()["series"][0]["state"] == "triaged"
    assert audited_input(db, uid) == whole.input_sha256

    # The next series is prepared as it arrives and its job finds it ready: no decode left.
    send(listener, second)
    other = wait_until(lambda: next((s["series_instance_uid"] for s in listener.status()["series"]
                                     if s["state"] == "queued"), None), what="the second series queued")
    assert prepare_everything(survivor) == len(second)
    files = [p for (p,) in db.conn.execute(
        "SELECT path FROM instances WHERE series_instance_uid = ? ORDER BY received_at", (other,))]
    decoded: list[Path] = []
    original = pipeline.prepare_instance
    monkeypatch.setattr(pipeline, "prepare_instance", lambda m, path: decoded.append(path) or original(m, path))
    assert survivor.run_once()
    monkeypatch.undo()
    assert decoded == []  # every instance came from the cache
    assert audited_input(db, other) == pipeline.prepare(
        model.manifest, [Path(p) for p in files]).input_sha256
    assert survivor.triage.prepared.series() == set() and survivor.triage.prepared.nbytes == 0
    assert not survivor.prepare_arrivals()  # nothing is arriving any more

"""Triage prepares arriving series for the model a rule would pick, a budget at a time;
it leaves alone a series no rule takes until its facts change, prepares again for a
model with another input key, and forgets a series that stopped arriving."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.filereader import read_file_meta_info

from appliance.config import WorkerSettings
from appliance.jobs import SeriesFacts, StoredFile
from appliance.models.manifest import InputSpec
from appliance.models.registry import InstalledModel
from appliance.states import ModelState
from appliance.triage import decide, pipeline
from appliance.triage.decide import Triage
from appliance.triage.routing import RoutingTable
from tests.helpers.inputs import manifest_for, mixed_series
from training.demo import head_ct

SPEC = head_ct(quick=True).input
ROUTING = RoutingTable.model_validate({"rule": [{"name": "head", "model": "prepared", "modality": ["CT"],
                                                 "min_instances": 13}]})


class Registry:
    """The active models, as the registry answers ``in_state``."""

    def __init__(self, spec: InputSpec):
        self.spec = spec

    def in_state(self, state: ModelState) -> list[InstalledModel]:
        manifest = manifest_for(self.spec)
        return [InstalledModel(manifest.id, manifest.version, state, "0" * 64, Path("/nowhere"), manifest, None)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[StoredFile, ...]:
    paths = mixed_series(tmp_path_factory.mktemp("series"))
    return tuple(StoredFile(path, "1.2.840.10008.1.2.1", path.name) for path in paths)


def test_arriving_series_are_prepared_a_budget_at_a_time_for_the_routed_model(files, monkeypatch):
    registry = Registry(SPEC)
    triage = Triage(registry, ROUTING, WorkerSettings())  # type: ignore[arg-type]
    facts = SeriesFacts("CT", instances=len(files))
    # Indexed as explicit little endian, the files say JPEG-LS, RLE...: all but the
    # explicit ones are found unreadable once, and left to the job to fail on.
    assert [triage.prepare_arrivals([("s", files, facts)], budget=5) for _ in range(4)] == [5, 5, 3, 0]
    assert triage.prepared.complete("s", files)
    assert {_syntax(p) for p in triage.prepared.instances("s", files)} == {"1.2.840.10008.1.2.1"}

    honest = tuple(replace(f, transfer_syntax_uid=_syntax(f.path)) for f in files)
    done = [triage.prepare_arrivals([("t", honest, facts)], budget=5) for _ in range(4)]
    assert done == [5, 5, 3, 0]
    key = pipeline.input_key(SPEC)
    assert len(triage.prepared.ready("t", key, honest)) == len(honest)
    assert triage.prepared.series() == {"t"}  # "s" stopped arriving: forgotten

    # An activation of a model with another input key prepares the series again.
    registry.spec = InputSpec.model_validate({**SPEC.model_dump(), "size": 24})
    assert triage.prepare_arrivals([("t", honest, facts)], budget=100) == 0  # complete: left to its job
    triage.prepared.drop("t")
    assert triage.prepare_arrivals([("t", honest, facts)], budget=100) == len(honest)
    assert triage.prepared.ready("t", key, honest) == {}
    assert len(triage.prepared.ready("t", pipeline.input_key(registry.spec), honest)) == len(honest)

    # A series no rule takes yet (too few instances) is routed again only when its facts change.
    reads: list[Path] = []
    real = decide.read_header
    monkeypatch.setattr(decide, "read_header", lambda path: reads.append(path) or real(path))
    few = SeriesFacts("CT", instances=3)
    for _ in range(3):
        assert triage.prepare_arrivals([("u", honest[:3], few)], budget=100) == 0
    assert len(reads) == 1
    assert triage.prepare_arrivals([("u", honest, facts)], budget=100) == len(honest)


def _syntax(path: Path) -> str:
    return str(read_file_meta_info(path).TransferSyntaxUID)


def test_a_failure_while_preparing_ahead_is_logged_and_the_worker_goes_on(tmp_path, caplog):
    from appliance.db import open_database
    from appliance.triage.prepared import PreparedCache
    from appliance.triage.worker import Worker

    class Broken:
        prepared = PreparedCache(1024)

        def prepare_arrivals(self, arriving, budget):
            raise OSError("spool unreadable")

    worker = Worker(open_database(tmp_path / "a.db"), WorkerSettings(), Broken(), None)  # type: ignore[arg-type]
    assert worker.prepare_arrivals() == 0
    assert "preparing arrived instances failed" in caplog.text and "spool unreadable" in caplog.text

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ApplianceProcess


@pytest.fixture
def appliance(tmp_path: Path):
    """A running listener on a free loopback port, stopped after the test."""
    process = ApplianceProcess(tmp_path / "data").start()
    yield process
    process.stop()


@pytest.fixture
def make_appliance(tmp_path: Path):
    """Start listeners with custom settings: ``make_appliance(dicom_quiet_period_s=1)``."""
    started: list[ApplianceProcess] = []

    def make(**settings: str) -> ApplianceProcess:
        process = ApplianceProcess(tmp_path / f"data{len(started)}", **settings).start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()

"""Fixtures of the hostile suite: one real listener per module (a start costs seconds on
a loaded machine; every test leaves it as it found it or says what it added)."""

from __future__ import annotations

import pytest

from scripts.harness import ApplianceProcess


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    """A running `appliance listener` on a free loopback port, shared by a module's tests."""
    process = ApplianceProcess(tmp_path_factory.mktemp("listener") / "data").start()
    yield process
    process.stop()

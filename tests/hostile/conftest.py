"""Fixtures of the hostile suite: one real listener per module (a start costs seconds on
a loaded machine; every test leaves it as it found it or says what it added)."""

from __future__ import annotations

import pytest

from scripts.harness import ApplianceProcess
from tests.helpers.hostile_web import running_web


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    """A running `appliance listener` on a free loopback port, shared by a module's tests."""
    process = ApplianceProcess(tmp_path_factory.mktemp("listener") / "data").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The web app with its users (see :func:`_running_web`); no models needed."""
    yield from running_web(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def models_web(tmp_path_factory):
    """The web app trusting the shipped demo key and a key of its own (``box.series``
    names the private key file under "private-key")."""
    from training.package import generate_keypair

    from tests.helpers.hub import SHIPPED

    root = tmp_path_factory.mktemp("models-web")
    private, public = generate_keypair(root / "keys" / "trusted.key")
    for box in running_web(root, APPLIANCE_MODELS_TRUSTED_KEYS=f"{SHIPPED / 'demo-signing.pub'},{public}"):
        box.series["private-key"] = str(private)
        yield box


@pytest.fixture
def hub(tmp_path):
    """A running hub process on loopback, on SQLite in its own data folder."""
    from tests.helpers.hub import HubProcess

    process = HubProcess(tmp_path / "hub", None).start()
    yield process
    process.stop()

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


def _running_web(root, **environ: str):
    """The web app under uvicorn on a free loopback port, on a fresh data folder with a
    radiologist, a biomed and an admin (password ``PASSWORD``) and a biomed API token."""
    from appliance.config import load_settings
    from appliance.db import open_database
    from appliance.parts import Parts
    from appliance.web import accounts
    from appliance.web.app import create_app
    from scripts.harness import free_port
    from tests.helpers.boxes import PASSWORD, Box, start_server

    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(root / "data"),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_WEB_PORT": str(free_port()),
        **environ,
    })
    db = open_database(settings.db_path)
    for name, role in (("rad", "radiologist"), ("bio", "biomed"), ("boss", "admin")):
        accounts.add_user(db.conn, name, role, PASSWORD, "test")
    box = Box(settings, "", create_app(Parts(settings)))
    box.series["biomed-token"] = accounts.create_token(db.conn, "biomed", "hostile-biomed", "test")
    server, thread, box.url = start_server(settings, box.app)
    yield box
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The web app with its users (see :func:`_running_web`); no models needed."""
    yield from _running_web(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def models_web(tmp_path_factory):
    """The web app trusting the shipped demo key and a key of its own (``box.series``
    names the private key file under "private-key")."""
    from training.package import generate_keypair

    from tests.helpers.hub import SHIPPED

    root = tmp_path_factory.mktemp("models-web")
    private, public = generate_keypair(root / "keys" / "trusted.key")
    for box in _running_web(root, APPLIANCE_MODELS_TRUSTED_KEYS=f"{SHIPPED / 'demo-signing.pub'},{public}"):
        box.series["private-key"] = str(private)
        yield box

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


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The web app under uvicorn on a free loopback port, on a fresh data folder with a
    radiologist, a biomed and an admin (password ``PASSWORD``); no models needed."""
    from appliance.config import load_settings
    from appliance.db import open_database
    from appliance.parts import Parts
    from appliance.web import accounts
    from appliance.web.app import create_app
    from scripts.harness import free_port
    from tests.helpers.boxes import PASSWORD, Box, start_server

    root = tmp_path_factory.mktemp("web")
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(root / "data"),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_WEB_PORT": str(free_port()),
    })
    db = open_database(settings.db_path)
    for name, role in (("rad", "radiologist"), ("bio", "biomed"), ("boss", "admin")):
        accounts.add_user(db.conn, name, role, PASSWORD, "test")
    app = create_app(Parts(settings))
    server, thread, url = start_server(settings, app)
    yield Box(settings, url, app)
    server.should_exit = True
    thread.join(timeout=30)

"""The web app of the hostile suite: a real uvicorn server on a fresh data folder."""

from __future__ import annotations

from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.web import accounts
from appliance.web.app import create_app
from scripts.harness import free_port
from tests.helpers.boxes import PASSWORD, Box, start_server


def running_web(root, **environ: str):
    """The web app under uvicorn on a free loopback port, on a fresh data folder with a
    radiologist, a biomed and an admin (password ``PASSWORD``) and a biomed API token."""
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

"""A seeded appliance for the web tests: real SQLite data dir, real ingest index, real
worker and models, the web app under uvicorn on a free loopback port, and Chromium."""

from __future__ import annotations

import time

import pytest

from appliance.config import load_settings
from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.receive.index import IngestIndex
from appliance.parts import Parts
from appliance.web import accounts
from appliance.web.app import create_app
from scripts.harness import free_port
from tests.helpers.boxes import (
    CHROMIUM_ARGS,
    IMG_NAME,
    PASSWORD,
    SCRIPT_NAME,
    Box,
    ingest_series,
    queue_and_work,
    start_server,
)
from tests.helpers.packages import rebuilt


@pytest.fixture(scope="module")
def box(tmp_path_factory, quick_packages):
    """Five studies, one per state, two with hostile patient names; three users; a server."""
    root = tmp_path_factory.mktemp("web")
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(root / "data"),
        "APPLIANCE_MODELS_TRUSTED_KEYS": str(quick_packages["public_key"]),
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@127.0.0.1:9",
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_WEB_PORT": str(free_port()),
        "APPLIANCE_WEB_MAX_UPLOAD_MB": "1",
        "APPLIANCE_WEB_POLL_INTERVAL_S": "2",
    })
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [quick_packages["public_key"]])
    key = quick_packages["private_key"]
    flags_all = registry.install(rebuilt(quick_packages["head-ct"], key, root, "1.0.0", threshold=0.0), "test")
    registry.activate(flags_all.id, flags_all.version, "test")
    index = IngestIndex(db)
    spool = settings.spool_dir
    worker = Parts(settings).worker(db)
    out = Box(settings, "")
    now = time.time()
    out.studies["flagged"], out.series["flagged"] = ingest_series(
        index, spool, 10, name=SCRIPT_NAME, patient_id="P-SCRIPT", accession="A100", description="CT HEAD WO",
        calling_ae="ED_CT", now=now - 600)
    out.studies["not-analysed"], _ = ingest_series(index, spool, 10, modality="MR", name="Mr^Brain",
                                                   patient_id="P-MR", accession="A101", description="MR BRAIN",
                                                   now=now - 500)
    out.studies["failed"], _ = ingest_series(index, spool, 10, name="Broken^Pixels", patient_id="P-BROKEN",
                                             accession="A102", broken=True, now=now - 400)
    queue_and_work(index, worker)
    flags_none = registry.install(rebuilt(quick_packages["head-ct"], key, root, "1.1.0", threshold=1.0), "test")
    registry.activate(flags_none.id, flags_none.version, "test")
    registry.shadow(flags_all.id, flags_all.version, "test")  # flags what the active one does not
    worker = Parts(settings).worker(db)
    out.studies["not-flagged"], _ = ingest_series(index, spool, 10, name=IMG_NAME, patient_id="P-IMG",
                                                  accession="A103", now=now - 300)
    queue_and_work(index, worker)
    out.studies["pending"], _ = ingest_series(index, spool, 10, name="Still^Arriving", patient_id="P-WAIT",
                                              accession="A104", now=time.time())  # after the summaries so far
    Parts(settings).upkeep(db).run_due(time.time())  # the worker's upkeep summarises the studies
    for name, role in (("rad", "radiologist"), ("bio", "biomed"), ("boss", "admin")):
        accounts.add_user(db.conn, name, role, PASSWORD, "test")
    out.app = create_app(Parts(settings))
    server, thread, out.url = start_server(settings, out.app)
    yield out
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()



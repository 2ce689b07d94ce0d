"""A seeded appliance for the web tests (the :class:`Box`): series ingested through the
real index, worked by the real worker, the web app under uvicorn on a free loopback port;
signing in with Chromium or with httpx through the real form."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from appliance.config import Settings
from appliance.db import open_database
from appliance.jobs import InstanceArrived
from appliance.parts import Parts
from appliance.receive.index import IngestIndex
from appliance.triage.worker import Worker
from appliance.web.app import create_app
from scripts.harness import REPO
from tests.helpers.series import ct_dataset

PASSWORD = "correct horse battery"


CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


SCRIPT_NAME = "<script>document.title='pwned'</script>"


IMG_NAME = '"><img src=x onerror="document.title=\'pwned\'">'


SCREENSHOTS = REPO / "var" / "screenshots"


@dataclass
class Box:
    settings: Settings
    url: str
    app: object = None
    studies: dict[str, str] = field(default_factory=dict)  # what -> study UID
    series: dict[str, str] = field(default_factory=dict)

    def db(self):
        return open_database(self.settings.db_path)


def ingest_series(index: IngestIndex, spool: Path, count: int, *, modality: str = "CT", name: str = "Doe^Jane",
                  patient_id: str = "PID-1", accession: str = "ACC-1", description: str = "CT HEAD",
                  calling_ae: str = "CT_1", broken: bool = False, now: float | None = None) -> tuple[str, str]:
    """Write a synthetic series to the spool and record it through the ingest index."""
    study, series = generate_uid(), generate_uid()
    folder = spool / series
    folder.mkdir(parents=True)
    for i in range(count):
        ds = ct_dataset(study, series, i, size=64, seed=len(name))
        ds.PatientName, ds.PatientID, ds.AccessionNumber, ds.StudyDescription = name, patient_id, accession, description
        if modality != "CT":
            from pydicom.uid import MRImageStorage

            ds.Modality, ds.SOPClassUID = modality, MRImageStorage
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        if broken and i == 3:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        index.record(arrived(ds, path, calling_ae, "assoc-test", description), now=now)
    return study, series


def arrived(ds: Dataset, path: Path, calling_ae: str, association_id: str, description: str) -> InstanceArrived:
    """What the listener would have recorded for ``ds`` stored at ``path`` (a head series
    described as ``description``)."""
    data = path.read_bytes()
    return InstanceArrived(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.StudyInstanceUID),
                           str(ds.SeriesInstanceUID), str(ds.Modality), "HEAD", description,
                           str(ds.file_meta.TransferSyntaxUID), len(data), hashlib.sha256(data).hexdigest(), path,
                           calling_ae, association_id)


def queue_and_work(index: IngestIndex, worker: Worker) -> None:
    """Queue every series, work every job, then run the worker's upkeep (the study
    summary the worklist reads), as the worker's loop does between jobs."""
    index.queue_complete_series(0.0, 0.0, now=time.time() + 1,
                                priority=lambda facts: 10 if facts.calling_ae == "ED_CT" else 0)
    while worker.run_once():
        pass
    worker.upkeep(time.time())


def serve(app, port: int, **options) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Run ``app`` under uvicorn on 127.0.0.1:``port`` in a daemon thread and return once it
    listens: the server, its thread and its base URL (https when ``ssl_certfile`` is given).
    ``options`` go to ``uvicorn.Config`` (default: warnings only, no access log)."""
    config = {"log_level": "warning", "access_log": False, **options}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("web server did not start")
        time.sleep(0.05)
    return server, thread, f"{'https' if 'ssl_certfile' in options else 'http'}://127.0.0.1:{port}"


def start_server(settings: Settings, app=None) -> tuple[uvicorn.Server, threading.Thread, str]:
    return serve(app or create_app(Parts(settings)), settings.web.port)


def sign_in(page, box: Box, name: str) -> None:
    page.goto(f"{box.url}/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def session_client(box: Box, name: str):
    """An httpx client signed in as ``name`` through the real form; returns (client, csrf)."""
    import re

    import httpx

    client = httpx.Client(base_url=box.url, timeout=60, headers={"Origin": box.url})
    form = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "csrf": token})
    assert answer.status_code == 303, answer.text
    page = client.get({"boss": "/admin/users", "rad": "/worklist"}.get(name, "/admin")).text
    return client, re.search(r'name="csrf" value="([^"]+)"', page).group(1)

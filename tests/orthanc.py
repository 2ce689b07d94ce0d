"""A real Orthanc (the Debian package) as the PACS in tests, with REST helpers.

Usage::

    appliance = ("TRIAGE", "127.0.0.1", port)
    with Orthanc(tmp_path / "orthanc", modalities={"appliance": appliance}) as pacs:
        env = {"APPLIANCE_DICOM_DESTINATIONS": pacs.destination}   # results go back here
        pacs.upload(path)                           # POST /instances
        pacs.store_study("appliance", study_uid)    # C-STORE the study to the appliance
        pacs.wait_for_instances(study_uid, 2)       # results came back
        pacs.find_instance(sop_instance_uid)        # {"ID", "MainDicomTags", ...} or None

Orthanc listens for DICOM on ``pacs.dicom_port`` as AE ``pacs.ae_title`` (all interfaces:
Orthanc 1.10 has no DICOM bind address) and for HTTP on ``pacs.url`` (loopback only,
no authentication). It runs in its own folder with TCP_NODELAY=1 in its environment
(DCMTK inside Orthanc reads it; without it loopback transfers crawl), logs to
``<folder>/orthanc.log`` and is stopped, with its folder left for post-mortems, on exit
(Orthanc takes about 3 s to shut down; share one instance between tests where you can).

Modalities given at start are known to Orthanc ("DicomModalities"): it accepts stores
from them and can send to them with :meth:`Orthanc.store`; :meth:`Orthanc.add_modality`
registers more while it runs. ``config`` overrides any Orthanc option (e.g.
``{"StableAge": 2}``, ``{"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2"]}``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port


class Orthanc:
    """One Orthanc process on free loopback ports in ``folder``.

    Parameters
    ----------
    folder : Path
        Created if missing; holds the configuration, storage, index and log.
    ae_title : str
        Orthanc's own AE title.
    modalities : dict, optional
        ``{name: (ae_title, host, port)}`` known to Orthanc from the start.
    config : dict, optional
        Extra Orthanc configuration options, applied last.
    """

    def __init__(self, folder: Path, ae_title: str = "ORTHANC",
                 modalities: dict[str, tuple[str, str, int]] | None = None,
                 config: dict[str, Any] | None = None):
        self.folder = folder
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = {
            "Name": "test-pacs",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(m) for name, m in (modalities or {}).items()},
            "DicomScuTimeout": 10,
            "SaveJobs": False,
            "HttpTimeout": 30,
            **(config or {}),
        }
        self.log = folder / "orthanc.log"
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def destination(self) -> str:
        """This Orthanc as an appliance destination: ``AE@127.0.0.1:port``."""
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 30.0) -> "Orthanc":
        """Start Orthanc and wait until its REST API answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(self.config, indent=2))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["Orthanc", str(config_path)], cwd=self.folder, stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get("/system").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 20 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.http.close()

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST helpers -------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Register (or update) a DICOM modality Orthanc can send to and accept from."""
        self._json("PUT", f"/modalities/{name}",
                   json={"AET": ae_title, "Host": host, "Port": port})

    def upload(self, path: Path) -> str:
        """Store a DICOM file through REST (no DICOM association); returns its Orthanc id."""
        return self._json("POST", "/instances", content=path.read_bytes())["ID"]

    def lookup(self, uid: str, kind: str) -> str | None:
        """Orthanc id of the resource with this DICOM UID; ``kind`` is Study, Series or
        Instance."""
        for hit in self._json("POST", "/tools/lookup", content=uid):
            if hit["Type"] == kind:
                return hit["ID"]
        return None

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of a study, expanded (``ID``, ``MainDicomTags``, ``ParentSeries``
        ...); empty when Orthanc does not have the study."""
        study = self.lookup(study_uid, "Study")
        return [] if study is None else self._json("GET", f"/studies/{study}/instances")

    def find_instance(self, sop_instance_uid: str) -> dict[str, Any] | None:
        """The expanded instance with this SOP Instance UID, or None."""
        instance = self.lookup(sop_instance_uid, "Instance")
        return None if instance is None else self._json("GET", f"/instances/{instance}")

    def instance_metadata(self, instance_id: str) -> dict[str, str]:
        """How an instance arrived: ``TransferSyntax``, ``RemoteAET``, ``SopClassUid``..."""
        return self._json("GET", f"/instances/{instance_id}/metadata", params={"expand": ""})

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file."""
        response = self.http.get(f"/instances/{instance_id}/file")
        response.raise_for_status()
        return response.content

    def store(self, modality: str, resources: list[str]) -> dict[str, Any]:
        """C-STORE Orthanc resources (ids of patients, studies, series or instances) to a
        modality, synchronously; raises on failure."""
        return self._json("POST", f"/modalities/{modality}/store",
                          json={"Resources": resources, "Synchronous": True})

    def store_study(self, modality: str, study_uid: str) -> dict[str, Any]:
        """C-STORE a whole study (by Study Instance UID) to a modality."""
        study = self.lookup(study_uid, "Study")
        if study is None:
            raise KeyError("Orthanc has no such study")
        return self.store(modality, [study])

    def wait_for_instances(self, study_uid: str, count: int, timeout: float = 30.0,
                           ) -> list[dict[str, Any]]:
        """Poll until the study holds at least ``count`` instances; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.instances_of_study(study_uid)
            if len(found) >= count or time.monotonic() > deadline:
                if len(found) < count:
                    raise AssertionError(f"{len(found)} of {count} instances after {timeout} s")
                return found
            time.sleep(0.1)

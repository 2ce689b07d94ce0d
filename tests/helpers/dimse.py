"""Talking DICOM to the appliance from a test: C-ECHO, C-STORE with pynetdicom or with
dcmtk's storescu, an A-ASSOCIATE-RQ built by hand, and waiting for queued series."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from scripts.harness import ApplianceProcess, tcp_env, wait_until
from tests.helpers.series import ct_dataset


def echo(port: int, ae_title: str = "TRIAGE") -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def echoscu(port: int, ae_title: str = "TRIAGE") -> bool:
    """C-ECHO from dcmtk's ``echoscu``, a process of its own: for a test that holds more
    than 1,023 descriptors, where pynetdicom's ``select()`` cannot watch its own socket and
    aborts the association before a byte is sent."""
    done = subprocess.run(["echoscu", "-to", "10", "-ta", "10", "-aet", "MONITOR", "-aec", ae_title, "127.0.0.1",
                           str(port)], env=tcp_env(), capture_output=True, text=True, timeout=60)
    return done.returncode == 0


def fresh(**changes) -> Dataset:
    ds = ct_dataset(generate_uid(), generate_uid(), 0)
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


def store(assoc, ds) -> tuple[int, str]:
    response = assoc.send_c_store(ds)
    return response.Status, str(response.get("ErrorComment", ""))


def send(listener: ApplianceProcess, files: list[Path]) -> None:
    subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(listener.port), *map(str, files)],
                   env=tcp_env(), check=True, timeout=120, capture_output=True)


def queued_series(listener: ApplianceProcess, count: int) -> list[dict]:
    def queued() -> list[dict]:
        series = listener.status()["series"]
        return series if len(series) >= count and all(s["state"] == "queued" for s in series) else []

    return wait_until(queued, what=f"{count} queued series", interval=0.2)


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def associate_rq(calling: str = "STRANGER", called: str = "TRIAGE", syntaxes=(ImplicitVRLittleEndian,)) -> bytes:
    """An A-ASSOCIATE-RQ for CT Image Storage (PS3.8 9.3.2), by hand, proposing ``syntaxes``."""
    context = bytes((1, 0, 0, 0)) + _item(0x30, CTImageStorage.encode())
    context += b"".join(_item(0x40, syntax.encode()) for syntax in syntaxes)
    body = (
        struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context)
        + _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    )
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def listener_with_head_ct(folder: Path, quick_packages: dict, **environ: str):
    """:func:`listener_with_model` with the quick head-CT model."""
    return listener_with_model(folder, quick_packages, "head-ct", **environ)


def listener_with_model(folder: Path, quick_packages: dict, model_name: str, **environ: str):
    """A running listener (a 30 s quiet period, so a test queues series itself) with the
    quick ``model_name`` model (``head-ct``, ``chest-cr``) installed and active; worker
    settings for its data (results go to a port nobody listens on), with ``environ`` on
    top. Returns the listener, the settings, an open database and the active model."""
    from appliance.config import load_settings
    from appliance.db import open_database
    from appliance.models.registry import ModelRegistry

    listener = ApplianceProcess(folder, dicom_quiet_period_s="30").start()
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(listener.data_dir),
        "APPLIANCE_MODELS_TRUSTED_KEYS": str(quick_packages["public_key"]),
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@127.0.0.1:9",
        **environ,
    })
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [quick_packages["public_key"]])
    model = registry.install(quick_packages[model_name], "test")
    registry.activate(model.id, model.version, "test")
    return listener, settings, db, registry.get(model.id, model.version)

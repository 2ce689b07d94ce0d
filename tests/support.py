"""Test helpers: synthetic DICOM writers and a real appliance process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ct_dataset(study: str, series: str, index: int, size: int = 64, seed: int = 0) -> Dataset:
    """One CT slice (int16, HU) as a complete dataset with file meta."""
    rng = np.random.default_rng(seed + index)
    pixels = rng.normal(40, 12, (size, size)).astype(np.int16)
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "Test^Patient", "TEST001"
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "CT", "HEAD", "Head non-contrast"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = pixels.tobytes()
    return ds


def write_ct_series(folder: Path, count: int, size: int = 64) -> list[Path]:
    """Write one CT series of ``count`` slices; returns the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.dcm"
        ct_dataset(study, series, i, size).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_mr_series(folder: Path, count: int) -> tuple[str, list[Path]]:
    """An MR series (no routing rule takes it); returns (series UID, files)."""
    from pydicom.uid import MRImageStorage

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds = ct_dataset(study, series, i)
        ds.Modality, ds.SOPClassUID = "MR", MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        paths.append(folder / f"mr{i:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return series, paths


class ApplianceProcess:
    """``appliance listener`` as a real child process."""

    def __init__(self, data_dir: Path, port: int | None = None, **settings: str):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(data_dir),
            "APPLIANCE_DICOM_PORT": str(self.port),
            "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1",
            "APPLIANCE_DICOM_PEERS": "*@127.0.0.1",
            "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "16",
            # `serve` also starts the web server: keep it off 8080 and off the network.
            "APPLIANCE_WEB_PORT": str(free_port()),
            "APPLIANCE_WEB_BIND_ADDRESS": "127.0.0.1",
            **{f"APPLIANCE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.process: subprocess.Popen | None = None
        self.command = "listener"  # or "serve": listener, worker and sender
        self.log = data_dir.parent / f"listener-{self.port}.log"

    def start(self, timeout: float = 20.0) -> "ApplianceProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", self.command],
            env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"listener exited: {self.log.read_text()[-2000:]}")
            if b"listening as" in self.log.read_bytes():
                return self
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError("listener did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def status(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "status", "--json"],
            env=self.env, cwd=REPO, capture_output=True, text=True, check=True,
        )
        import json

        return json.loads(out.stdout)


def echo(port: int, ae_title: str = "TRIAGE") -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def tcp_env() -> dict[str, str]:
    """Environment for dcmtk tools: Nagle off, or loopback transfers crawl."""
    return {**os.environ, "TCP_NODELAY": "1"}

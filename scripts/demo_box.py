"""A demo appliance as README sets one up, in a temporary folder, for the screenshot
script (``scripts/screenshot-pages``) and the command-table test.

Everything is the real thing: ``appliance serve`` as a child process with the two signed
demo packages of ``firmware-config/models`` installed and activated by the CLI, Orthanc as
the PACS it sends results to, studies sent by dcmtk's ``storescu`` (synthetic head CTs and
a chest radiograph from the trainer's generators, a head CT too short for its rule, a
chest CT and an MR no rule takes), and web users added by ``appliance users add``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from appliance.states import SeriesState
from scripts.harness import REPO, ApplianceProcess, Orthanc, free_port, tcp_env, wait_until
from training.data.cr_synth import CRConfig, generate_cr_dataset
from training.data.ct_synth import CTConfig, generate_ct_dataset

MODELS = REPO / "firmware-config" / "models"
DEMO_KEY = MODELS / "demo-signing.pub"
PASSWORD = "correct horse battery"
#: name -> role of the users the demo box has
USERS = {"rad": "radiologist", "bio": "biomed", "boss": "admin"}
DONE = {SeriesState.TRIAGED, SeriesState.NOT_ELIGIBLE, SeriesState.FAILED}


@dataclass
class DemoBox:
    work: Path
    appliance: ApplianceProcess
    pacs: Orthanc
    web_url: str
    studies: dict[str, str] = field(default_factory=dict)  # what -> study UID

    @property
    def env(self) -> dict[str, str]:
        return self.appliance.env

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """``appliance ARGS`` against this box; output as text."""
        return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=self.env, cwd=REPO,
                              input=stdin, capture_output=True, text=True, check=check, timeout=600)

    def send(self, folder: Path, calling_ae: str = "CT_1") -> None:
        # -xt: JPEG-LS lossless too (the chest radiographs are stored so)
        subprocess.run(["storescu", "-xt", "-aet", calling_ae, "-aec", "TRIAGE", "+sd", "127.0.0.1",
                        str(self.appliance.port), str(folder)],
                       env=tcp_env(), check=True, capture_output=True, timeout=300)


def _study_of(folder: Path) -> str:
    first = next(p for p in sorted(folder.rglob("*.dcm")))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _rewrite(folder: Path, **elements: object) -> None:
    """Set ``elements`` in every file of ``folder`` (new study, series and SOP UIDs: another study)."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        for name, value in elements.items():
            setattr(ds, name, value)
        ds.save_as(path, enforce_file_format=True)


def make_studies(root: Path, light: bool = False) -> dict[str, Path]:
    """Folders of DICOM files, one study each: what -> folder (``light``: one head CT with
    a bleed and nothing else)."""
    out: dict[str, Path] = {}
    routine = {"thicknesses_mm": (5.0,), "coverage_mm": (110.0, 120.0)}
    truths = generate_ct_dataset(CTConfig(n_patients=1 if light else 2, seed=7, positive_fraction=1.0 if light else 0.5,
                                          **routine), root / "ct", workers=1)
    for truth in truths:
        folder = next(p.parent for p in (root / "ct").rglob("*.dcm")
                      if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == truth.series_uid)
        out[f"head-ct-{'bleed' if truth.label else 'clear'}"] = folder
    if light:
        return out
    # A head CT cut to 5 slices (the rule wants at least 8), a chest CT and an MR: not analysed.
    for what, source, elements in (
        ("head-ct-short", out["head-ct-clear"], {"PatientName": "SHORT^SERIES"}),
        ("chest-ct", out["head-ct-clear"], {"BodyPartExamined": "CHEST", "SeriesDescription": "CT CHEST",
                                            "StudyDescription": "CT chest", "PatientName": "LUNG^LOU"}),
    ):
        folder = root / what
        folder.mkdir()
        files = sorted(source.glob("*.dcm"))
        for path in files[:5] if what == "head-ct-short" else files:
            (folder / path.name).write_bytes(path.read_bytes())
        _rewrite(folder, **elements)
        out[what] = folder
    generate_cr_dataset(CRConfig(n_patients=1, seed=3, columns=(2000, 2000)), root / "cr", workers=1)
    out["chest-radiograph"] = next((root / "cr").rglob("*.dcm")).parent
    mr = root / "mr"
    mr.mkdir()
    for path in sorted(out["head-ct-clear"].glob("*.dcm"))[:10]:
        ds = pydicom.dcmread(path)
        ds.Modality, ds.SeriesDescription, ds.PatientName = "MR", "MR BRAIN T2", "MAGNET^MAX"
        ds.StudyDescription = "MR brain"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        ds.PixelData = np.clip(ds.pixel_array, 0, 4000).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(mr / path.name, enforce_file_format=True)
    _rewrite(mr)
    out["mr"] = mr
    return out


@contextmanager
def demo_box(work: Path, light: bool = False) -> Iterator[DemoBox]:
    """The running box with its studies triaged (or not analysed) and summarised
    (``light``: the head-CT package only, and one head CT)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with Orthanc(work / "orthanc", ae_title="PACS", modalities={"triage": ("TRIAGE", "127.0.0.1", port)}) as pacs:
        appliance = ApplianceProcess(work / "data", port=port, dicom_destinations=pacs.destination,
                                     models_trusted_keys=str(DEMO_KEY), dicom_peers="*@127.0.0.1")
        appliance.command = "serve"
        box = DemoBox(work, appliance, pacs, f"http://127.0.0.1:{appliance.env['APPLIANCE_WEB_PORT']}")
        for package in sorted(MODELS.glob("head-ct-*.tar" if light else "*.tar")):
            box.cli("models", "install", "--activate", str(package))
        for name, role in USERS.items():
            box.cli("users", "add", name, "--role", role, stdin=PASSWORD + "\n")
        folders = make_studies(work / "studies", light)
        appliance.start()
        try:
            for what, folder in folders.items():
                box.send(folder, "ED_CT" if what == "head-ct-bleed" else "CT_1")
                box.studies[what] = _study_of(folder)

            def settled() -> bool:
                series = box.cli("status", "--json").stdout
                states = [s["state"] for s in json.loads(series)["series"]]
                return len(states) == len(folders) and all(s in DONE for s in states)

            wait_until(settled, timeout=600, what="every series to be triaged or not analysed")
            time.sleep(3)  # the worker's upkeep summarises the studies every second
            yield box
        finally:
            appliance.stop()

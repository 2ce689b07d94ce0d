"""Reading and checking result objects: the SR content tree with plain pydicom, dciodvfy's
verdict, and the report builders' inputs for a head CT and a chest radiograph."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from appliance.report import INTRACRANIAL_HEMORRHAGE, PULMONARY_NODULE, ResultContent

WHEN = dt.datetime(2025, 3, 14, 10, 20, 5)
DEVICE_UID = "1.2.826.0.1.3680043.8.498.1"
SHA = "0123456789abcdef" * 4


# --- what the builders are given -----------------------------------------------------------
def decision(flag: bool = True, score: float | None = None, **overrides) -> ResultContent:
    fields = dict(
        task="head-ct-ich", finding="Intracranial hemorrhage", finding_code=INTRACRANIAL_HEMORRHAGE,
        flag=flag, score=(0.87 if flag else 0.12) if score is None else score, threshold=0.5,
        model_id="head-ct-ich", model_version="1.2.0", model_sha256=SHA, decided_at=WHEN,
    )
    fields.update(overrides)
    return ResultContent(**fields)


def nodule_decision(flag: bool) -> ResultContent:
    return decision(
        flag, task="chest-cr-nodule", finding="Pulmonary nodule", finding_code=PULMONARY_NODULE,
        model_id="chest-cr-nodule", model_version="0.3.1",
    )


# --- reading an SR content tree with plain pydicom -----------------------------------------
def content_items(item: Dataset) -> Iterator[Dataset]:
    """Every content item below ``item``, depth first."""
    for child in item.get("ContentSequence", []):
        yield child
        yield from content_items(child)


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def find(sr: Dataset, value: str, scheme: str) -> list[Dataset]:
    return [i for i in content_items(sr) if concept(i) == (value, scheme)]


def only(sr: Dataset, value: str, scheme: str) -> Dataset:
    items = find(sr, value, scheme)
    assert len(items) == 1, (value, scheme, len(items))
    return items[0]


def coded_value(item: Dataset) -> tuple[str, str]:
    code = item.ConceptCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def num_value(item: Dataset) -> float:
    return float(item.MeasuredValueSequence[0].NumericValue)


# --- dciodvfy (dicom3tools) ----------------------------------------------------------------
# A private coding scheme (99TRIAGE, declared in the SR) and the Device UID that IHE AI
# Results asks for in the Contributing Equipment item (newer than dicom3tools' tables,
# which then call the SR "Standard Extended") are the only things dciodvfy may warn
# about; any other warning is a regression to look at.
ALLOWED_WARNINGS = (
    "Unrecognized defined term <99TRIAGE> for value 1 of attribute <Coding Scheme Designator>",
    "Attribute is not present in standard DICOM IOD - (0x0018,0x1002) UI Device UID ",
    "Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard Extended SOP Class",
)


def write(ds: Dataset, path: Path) -> Path:
    if "TransferSyntaxUID" not in ds.get("file_meta", {}):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def dciodvfy(path: Path) -> tuple[str, list[str]]:
    """The IOD dciodvfy recognised and its findings (Error / Warning lines) for one file."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    findings = [line for line in lines if line.startswith(("Error", "Warning"))]
    iods = [line for line in lines if line and not line.startswith(("Error", "Warning"))]
    iod = iods[0] if len(iods) == 1 else repr(iods)  # the IOD name, on a line of its own
    assert (out.returncode == 0) == (not any(f.startswith("Error") for f in findings)), (out.returncode, findings)
    return iod, findings


def assert_valid(path: Path, allowed: tuple[str, ...] = ALLOWED_WARNINGS) -> None:
    iod, findings = dciodvfy(path)
    assert iod == {"SR": "Comprehensive3DSR", "OT": "SCImage"}[pydicom.dcmread(path).Modality]
    assert not [f for f in findings if f.startswith("Error")], findings
    assert not [f for f in findings if not f.endswith(allowed)], findings

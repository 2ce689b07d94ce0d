"""Header parts both result objects share: equipment, source copy, timestamps."""

from __future__ import annotations

import copy
from typing import Any

from highdicom.valuerep import _check_specific_character_set
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from appliance import __version__
from appliance.report.content import NoticeContent, ResultContent

MANUFACTURER = "Triage Appliance"
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"

# Patient and study attributes highdicom reads from the source: Type 2, so they may be
# empty but must exist; real archives sometimes drop them.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)
_PATIENT_SEX = {"M", "F", "O", ""}


def equipment(content: ResultContent | NoticeContent) -> dict[str, Any]:
    """General Equipment keyword arguments for highdicom: the appliance and the model."""
    model = f"{content.model_id} {content.model_version}".strip()
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": MANUFACTURER,
        "software_versions": [__version__, model[:64]],
    }


def source_header(source: Dataset) -> Dataset:
    """A pixel-free copy of ``source`` with the Type 2 patient/study attributes present.

    A missing attribute becomes empty; a Patient's Sex outside M/F/O (which highdicom
    refuses) becomes empty too; a Specific Character Set highdicom does not know becomes
    ISO_IR 192 (the text was already read, so the label no longer matters). ``source``
    itself is not changed.
    """
    head = Dataset()
    for elem in source:
        if elem.keyword != "PixelData":
            head.add(copy.deepcopy(elem))
    for keyword in _TYPE2:
        if keyword not in head:
            setattr(head, keyword, None)
    if head.PatientSex not in _PATIENT_SEX:
        head.PatientSex = None
    if "SpecificCharacterSet" in head:
        try:
            _check_specific_character_set(head.SpecificCharacterSet)
        except ValueError:  # a label we cannot name: pydicom read the text as ASCII/Latin-1
            head.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 writes whatever was read
    return head


def content_datetime(content: ResultContent | NoticeContent) -> dict[str, Any]:
    """Content and series date/time keyword arguments for highdicom."""
    when = content.decided_at.replace(tzinfo=None)
    return {
        "content_date": when.date(),
        "content_time": when.time(),
        "series_date": when.date(),
        "series_time": when.time(),
    }


def stamp(ds: Dataset, content: ResultContent | NoticeContent) -> None:
    """Replace the wall-clock times highdicom writes with the decision's time.

    Sets the instance creation date/time, the contribution date/time of highdicom's
    own contributing equipment item, and, for an aware ``decided_at``, the Timezone
    Offset From UTC.
    """
    when = content.decided_at
    local = when.replace(tzinfo=None)
    ds.InstanceCreationDate, ds.InstanceCreationTime = DA(local.date()), TM(local.time())
    for item in ds.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == "highdicom":
            item.ContributionDateTime = DT(local)
    offset = when.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        ds.TimezoneOffsetFromUTC = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"

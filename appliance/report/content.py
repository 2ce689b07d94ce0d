"""What the result objects say (:class:`ResultContent`) and what the "not analysed"
notice says (:class:`NoticeContent`), with the codes both use."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import NamedTuple


class Code(NamedTuple):
    """A coded concept as DICOM writes it."""

    value: str
    scheme: str  # coding scheme designator
    meaning: str


#: SNOMED CT codes of the findings the demo models triage.
#: Meanings are SNOMED CT's en-GB preferred terms: the SR's language is en-GB.
INTRACRANIAL_HEMORRHAGE = Code("1386000", "SCT", "Intracranial haemorrhage")
PULMONARY_NODULE = Code("786838002", "SCT", "Pulmonary nodule")
PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")

#: Why a claimed series was not analysed: codes of the private scheme ``99TRIAGE``
#: (DICOM and SNOMED CT have none that say this), each with its plain-words meaning.
OUTSIDE_INPUT_CONSTRAINTS = Code("NA-INPUT", "99TRIAGE", "Series outside the model's input constraints")
ANALYSIS_FAILED = Code("NA-FAILED", "99TRIAGE", "AI analysis failed")
ANALYSIS_TIMED_OUT = Code("NA-TIMEOUT", "99TRIAGE", "AI analysis timed out")
NOTICE_REASONS = (OUTSIDE_INPUT_CONSTRAINTS, ANALYSIS_FAILED, ANALYSIS_TIMED_OUT)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LO_MAX = 64


@dataclass(frozen=True)
class ResultContent:
    """One model's decision about one source series.

    Parameters
    ----------
    task : str
        Routing task, e.g. ``"head-ct-ich"`` or ``"chest-cr-pneumothorax"``.
    finding : str
        Human name of the finding, e.g. ``"Intracranial haemorrhage"``.
    finding_code : tuple of str
        ``(code value, coding scheme designator, code meaning)``, e.g.
        :data:`INTRACRANIAL_HEMORRHAGE`.
    flag : bool
        Whether the series was flagged; must equal ``score >= threshold``.
    score : float
        Series score in [0, 1].
    threshold : float
        Operating point in [0, 1] the score was compared with.
    model_id, model_version : str
        Model package id and semantic version.
    model_sha256 : str
        sha256 (64 lower-case hex digits) of the model package.
    variant : str
        The variant that ran, ``backend/device/precision`` (e.g.
        ``onnxruntime/CPU/fp32``), or empty when unknown.
    decided_at : datetime.datetime
        When the decision was made; written as the objects' content and creation
        date/time (as given; an aware value also writes its UTC offset), so a retry
        with the same decision and UIDs produces the same objects.
    """

    task: str
    finding: str
    finding_code: tuple[str, str, str]
    flag: bool
    score: float
    threshold: float
    model_id: str
    model_version: str
    model_sha256: str
    decided_at: dt.datetime
    variant: str = ""

    def __post_init__(self) -> None:
        for name in ("score", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
        if self.flag != (self.score >= self.threshold):
            raise ValueError(f"flag={self.flag} contradicts score {self.score} and threshold {self.threshold}")
        if not _SHA256.match(self.model_sha256):
            raise ValueError("model_sha256 must be 64 lower-case hex digits")
        if len(self.finding_code) != 3 or not all(self.finding_code):
            raise ValueError("finding_code must be (value, scheme designator, meaning), none empty")
        for name in ("task", "finding", "model_id", "model_version"):
            _check_lo(name, getattr(self, name))
        if self.variant:
            _check_lo("variant", self.variant)


@dataclass(frozen=True)
class NoticeContent:
    """Why a series that a routing rule claimed got no triage result.

    Parameters
    ----------
    task : str
        The routing rule's name, e.g. ``"head CT"``.
    finding : str
        The finding the rule's model looks for (said as "not assessed"), or empty.
    reason : str
        The reason in plain words, e.g. ``"slice thickness 10 mm outside 0.5-5 mm"``.
    reason_code : tuple of str
        One of :data:`NOTICE_REASONS`.
    model_id, model_version : str
        The model the rule names, and its active version (empty when none is active).
    decided_at : datetime.datetime
        When the series ended; the notice's content and creation date/time.
    """

    task: str
    finding: str
    reason: str
    reason_code: tuple[str, str, str]
    model_id: str
    model_version: str
    decided_at: dt.datetime

    def __post_init__(self) -> None:
        if self.reason_code not in NOTICE_REASONS:
            raise ValueError(f"reason_code must be one of {[c[0] for c in NOTICE_REASONS]}")
        if not self.reason.strip():
            raise ValueError("reason must say why, in words")
        for name in ("task", "model_id"):
            _check_lo(name, getattr(self, name))
        for name in ("finding", "model_version"):
            if getattr(self, name):
                _check_lo(name, getattr(self, name))


def _check_lo(name: str, value: str) -> None:
    if not value or len(value) > _LO_MAX or "\\" in value:
        raise ValueError(f"{name} must be 1 to {_LO_MAX} characters without a backslash")


#: The coded finding for the words a manifest's finding uses.
_FINDING_CODES = (
    (("haemorrhage", "hemorrhage"), INTRACRANIAL_HEMORRHAGE),
    (("pneumothorax",), PNEUMOTHORAX),
    (("nodule",), PULMONARY_NODULE),
)


def finding_code(finding: str) -> tuple[str, str, str] | None:
    """The SNOMED CT code of a model's finding, by its words; None if none fits (pure)."""
    text = finding.lower()
    for words, code in _FINDING_CODES:
        if any(word in text for word in words):
            return code
    return None

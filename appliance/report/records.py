"""What the result objects say: the triage decision and the UIDs they are stored under."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

from pydicom.uid import generate_uid

#: SNOMED CT codes (value, scheme designator, meaning) of the findings the demo models triage.
INTRACRANIAL_HEMORRHAGE = ("1386000", "SCT", "Intracranial hemorrhage")
PULMONARY_NODULE = ("786838002", "SCT", "Pulmonary nodule")
PNEUMOTHORAX = ("36118008", "SCT", "Pneumothorax")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LO_MAX = 64


@dataclass(frozen=True)
class TriageDecision:
    """One model's decision about one source series.

    Parameters
    ----------
    task : str
        Routing task, e.g. ``"head-ct-ich"`` or ``"chest-cr-pneumothorax"``.
    finding : str
        Human name of the finding, e.g. ``"Intracranial hemorrhage"``.
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
            value = getattr(self, name)
            if not value or len(value) > _LO_MAX or "\\" in value:
                raise ValueError(f"{name} must be 1 to {_LO_MAX} characters without a backslash")


@dataclass(frozen=True)
class ResultUids:
    """Series and instance UIDs of the two result objects.

    Callers keep them with the job, so a retried job rebuilds identical objects
    instead of new ones; :meth:`from_key` derives them from such a stable key.
    """

    sr_series_uid: str
    sr_instance_uid: str
    sc_series_uid: str
    sc_instance_uid: str

    @classmethod
    def from_key(cls, key: str) -> ResultUids:
        """Four distinct UIDs, the same for the same ``key`` (e.g. a job id) every time."""
        return cls(*(str(generate_uid(entropy_srcs=[key, part])) for part in ("sr-series", "sr", "sc-series", "sc")))


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

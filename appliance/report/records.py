"""What the result objects say: the triage decision or the "not analysed" notice, and the
UIDs they are stored under."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass

#: SNOMED CT codes (value, scheme designator, meaning) of the findings the demo models triage.
INTRACRANIAL_HEMORRHAGE = ("1386000", "SCT", "Intracranial hemorrhage")
PULMONARY_NODULE = ("786838002", "SCT", "Pulmonary nodule")
PNEUMOTHORAX = ("36118008", "SCT", "Pneumothorax")

#: Why a claimed series was not analysed: codes of the private scheme ``99TRIAGE``
#: (DICOM and SNOMED CT have none that say this), each with its plain-words meaning.
OUTSIDE_INPUT_CONSTRAINTS = ("NA-INPUT", "99TRIAGE", "Series outside the model's input constraints")
ANALYSIS_FAILED = ("NA-FAILED", "99TRIAGE", "AI analysis failed")
ANALYSIS_TIMED_OUT = ("NA-TIMEOUT", "99TRIAGE", "AI analysis timed out")
NOT_ANALYSED_REASONS = (OUTSIDE_INPUT_CONSTRAINTS, ANALYSIS_FAILED, ANALYSIS_TIMED_OUT)

#: The organisation root used when none is configured: UUID-derived UIDs (PS3.5 B.2),
#: which need no registration.
UUID_ROOT = "2.25"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LO_MAX = 64
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UID_MAX = 64


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
class NotAnalysed:
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
        One of :data:`NOT_ANALYSED_REASONS`.
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
        if self.reason_code not in NOT_ANALYSED_REASONS:
            raise ValueError(f"reason_code must be one of {[c[0] for c in NOT_ANALYSED_REASONS]}")
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


def check_uid_root(root: str) -> str:
    """``root`` if it can prefix derived UIDs (digits and dots, no leading zeros, at most
    40 characters, leaving room for 23 digits); else ValueError (pure)."""
    if not _UID_ROOT.match(root) or len(root) > 40:
        raise ValueError(f"{root!r} is not a UID root: digits and dots, no leading zeros, at most 40 characters")
    return root


def derive_uid(root: str, *parts: str) -> str:
    """A UID under ``root`` that depends only on ``parts`` (pure).

    Under the UUID root ``2.25`` the suffix is 128 bits of the parts' SHA-256 as a
    decimal integer (a name-based UUID in PS3.5 B.2 form); under an organisation's own
    root it is as many decimal digits of the hash as fit in 64 characters (at most 39).
    """
    check_uid_root(root)
    digest = int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest(), "big")
    if root == UUID_ROOT:
        return f"{root}.{digest >> 128}"
    digits = min(_UID_MAX - len(root) - 1, 39)
    return f"{root}.{str(digest)[:digits]}"


def device_uid(root: str, install: str) -> str:
    """The Device Observer UID of the appliance with install identity ``install`` (pure)."""
    return derive_uid(root, install, "device")


@dataclass(frozen=True)
class ResultUids:
    """Series and instance UIDs of the result objects of one series generation.

    :meth:`derive` makes them from the install identity, the source series and its
    generation, so a retried job rebuilds identical objects, while another appliance,
    another series or a re-triage after a late instance gets different ones. The
    notice UIDs are used instead of the SR's when the series is not analysed.
    """

    sr_series_uid: str
    sr_instance_uid: str
    sc_series_uid: str
    sc_instance_uid: str
    notice_series_uid: str = ""
    notice_instance_uid: str = ""

    @classmethod
    def derive(cls, root: str, install: str, source_series_uid: str, generation: int) -> ResultUids:
        """Six distinct UIDs under ``root`` for this appliance, series and generation (pure).

        The series UIDs do not depend on the generation: a re-triaged series' new SR
        joins the earlier one's series in PACS, as its next version."""
        series = [
            derive_uid(root, install, source_series_uid, part) for part in ("sr-series", "sc-series", "notice-series")
        ]
        instance = [
            derive_uid(root, install, source_series_uid, str(generation), part) for part in ("sr", "sc", "notice")
        ]
        return cls(series[0], instance[0], series[1], instance[1], series[2], instance[2])

    @classmethod
    def from_key(cls, key: str) -> ResultUids:
        """UIDs under the UUID root from one stable key (tests and warm-up) (pure)."""
        return cls.derive(UUID_ROOT, key, "", 0)


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

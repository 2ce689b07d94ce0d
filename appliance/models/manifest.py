"""The model package's manifest (``manifest.json``): its schema, shared with the trainer
that writes it, and the few pure functions of the package's numbers (score aggregation,
calibration) that the box and the trainer must compute alike.

Reading and checking the package file itself (tar, hashes, signature) is
:mod:`appliance.models.package`; this module does no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from appliance.errors import PackageError

#: The largest model input side (pixels): a package asking for more would have every
#: series decoded into buffers the box cannot hold (1e6 a side is 4 TB a channel).
MAX_INPUT_SIZE = 2048
_SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """A CT display window turned into one input channel.

    With ``zero_above`` (HU) every pixel denser than that reads 0 in this channel instead
    of 1: bone and calcification drop out, and blood beside the skull stays bright.
    """

    name: str
    center: float
    width: float = Field(gt=0)
    zero_above: float | None = None

    @model_validator(mode="after")
    def _zero_above_the_window(self) -> Window:
        if self.zero_above is not None and self.zero_above < self.center + self.width / 2:
            raise ValueError(
                f"window {self.name!r}: zero_above ({self.zero_above:g} HU) must not be below the "
                f"window's top ({self.center + self.width / 2:g} HU)"
            )
        return self

    @classmethod
    def from_tuple(cls, window: tuple) -> Window:
        """The window ``(name, center, width[, zero_above])`` (as :meth:`as_tuple` gives it)."""
        name, center, width, *zero_above = window
        return cls(name=name, center=center, width=width, zero_above=zero_above[0] if zero_above else None)

    def as_tuple(self) -> tuple:
        """``(name, center, width)``, with ``zero_above`` as a fourth item when set."""
        return (self.name, self.center, self.width) + (() if self.zero_above is None else (self.zero_above,))


class InputSpec(_Strict):
    """What the model eats and how to build it with ``appliance.triage.preprocess``.

    ``kind`` selects the preprocess chain: ``ct_slice`` -> ``ct_slice_input(stored,
    slope, intercept, windows, size)``, ``radiograph`` -> ``radiograph_input(stored,
    photometric, size)``. With ``slab_mm`` each CT slice's input is then averaged over a
    slab that thick (``slab_average``), whatever the series' slice thickness; with
    ``context_slices`` k, the k slabs (or slices) either side join it as channels
    (``with_context``), so ``channels`` is the windows times ``2k + 1``.
    """

    kind: Literal["ct_slice", "radiograph"]
    modalities: list[str] = Field(min_length=1)
    body_part: str
    sop_class_uids: list[str] = Field(min_length=1)
    name: str = "image"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    channels: int = Field(gt=0)
    size: int = Field(gt=0, le=MAX_INPUT_SIZE)
    windows: list[Window] = []
    slab_mm: float | None = Field(default=None, gt=0, le=20)
    context_slices: int = Field(default=0, ge=0, le=3)

    @model_validator(mode="after")
    def _windows_match_channels(self) -> InputSpec:
        if self.kind != "ct_slice":
            if self.slab_mm is not None or self.context_slices:
                raise ValueError("slab_mm and context_slices apply to ct_slice inputs only")
            return self
        if len(self.windows) * self.slices_per_input != self.channels:
            raise ValueError(
                f"ct_slice input needs one window per channel of each of its {self.slices_per_input} "
                f"slice(s) ({self.channels} channels), got {len(self.windows)} windows"
            )
        return self

    @property
    def slices_per_input(self) -> int:
        """The slice and its ``context_slices`` neighbours either side."""
        return 2 * self.context_slices + 1

    def window_tuples(self) -> list[tuple]:
        """Windows as ``(name, center, width[, zero_above])`` tuples for ``preprocess.multi_window``."""
        return [w.as_tuple() for w in self.windows]


class Outputs(_Strict):
    """Output tensor names. ``score``: shape (N,), sigmoid probability of the finding.
    ``cam``: shape (N, cam_size, cam_size), class-activation map in logit units."""

    score: str = "score"
    cam: str = "cam"
    cam_size: int = Field(gt=0)


class Aggregation(_Strict):
    """How per-image scores of one series combine into the series score."""

    method: Literal["max", "topk_mean"]
    k: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _k_for_topk(self) -> Aggregation:
        if (self.method == "topk_mean") != (self.k is not None):
            raise ValueError("k is required for topk_mean and only for topk_mean")
        return self

    def apply(self, scores: np.ndarray) -> float:
        """Series score from per-image scores (``max``, or mean of the top ``k``)."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if s.size == 0:
            raise ValueError("cannot aggregate an empty series")
        if self.method == "max" or self.k is None:  # the validator gives topk_mean its k
            return float(s.max())
        return float(np.sort(s)[-min(self.k, s.size) :].mean())


class Calibration(_Strict):
    """Map from the aggregated series score to the calibrated score the threshold applies to.

    ``platt``: ``sigmoid(a * logit(score) + b)``, fitted on the package's calibration
    split (a held-out set of patients, never trained on). A package without one (built
    before calibration existed) thresholds the aggregated score itself.
    """

    method: Literal["platt"]
    a: float
    b: float
    fitted_on: str = "calibration split"

    def apply(self, score: float) -> float:
        """The calibrated score of one aggregated series score (pure, in [0, 1])."""
        p = min(max(float(score), 1e-7), 1 - 1e-7)
        z = self.a * float(np.log(p / (1 - p))) + self.b
        return float(1.0 / (1.0 + np.exp(-min(max(z, -60.0), 60.0))))


class OperatingPoint(_Strict):
    """Decision threshold on the series score (the calibrated one when the package has a
    :class:`Calibration`), chosen on a split the test split never touches."""

    threshold: float = Field(ge=0, le=1)
    target_sensitivity: float = Field(ge=0, le=1)
    validation_sensitivity: float = Field(ge=0, le=1)
    validation_specificity: float = Field(ge=0, le=1)
    #: The split the threshold (and the two figures above) come from.
    chosen_on: str = "validation split"
    #: The workload bound chosen with it: flag rate at most ``max_flag_rate`` at
    #: ``prevalence``, and whether a threshold on that split met it with the sensitivity target.
    max_flag_rate: float | None = Field(default=None, ge=0, le=1)
    prevalence: float | None = Field(default=None, gt=0, lt=1)
    meets_flag_rate: bool | None = None


class Range(_Strict):
    """An inclusive range; either end may be open."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def __str__(self) -> str:
        return self.text()

    def text(self, digits: int = 4) -> str:
        """``0.3906-0.4883``, ``>= 3``, ``256``: the bounds to ``digits`` significant digits."""
        low = "" if self.min is None else f"{self.min:.{digits}g}"
        high = "" if self.max is None else f"{self.max:.{digits}g}"
        if low and low == high:
            return low
        return f"{low}-{high}" if low and high else f">= {low}" if low else f"<= {high}"


class InputConstraints(_Strict):
    """What a series must look like for the model's output to mean anything: the ranges
    its training data covered. A series outside them is not scored (``not-eligible``).

    ``excluded_image_types``: an instance whose ImageType holds every value of one entry
    is out (e.g. ``[["LOCALIZER"], ["DERIVED", "SECONDARY"]]``). ``required_tags``: DICOM
    keywords every instance must carry with a value.

    ``patient_age_years``: the patient's age in years (Patient Age, else Patient Birth
    Date against Study Date; unknown is out). ``view_positions``: the View Position
    values allowed (missing is out). ``contrast``: ``"none"`` refuses a series whose
    Contrast/Bolus Agent or Route has a value. Every field is optional, so a package
    built before a field existed still verifies and is simply not constrained by it.
    """

    slice_thickness_mm: Range | None = None
    pixel_spacing_mm: Range | None = None
    rows: Range | None = None
    columns: Range | None = None
    slice_count: Range | None = None
    excluded_image_types: list[list[str]] = []
    required_tags: list[str] = []
    patient_age_years: Range | None = None
    view_positions: list[str] | None = Field(default=None, min_length=1)
    contrast: Literal["none"] | None = None


class Tolerance(_Strict):
    """Maximum absolute difference from the golden expected outputs.

    ``cam_min_overlap``, when set, replaces the raw CAM comparison: the fraction of the
    golden map's top-region cells (:data:`appliance.models.qualify.CAM_TOP_FRACTION` of the map) that are also in
    the variant's top region must reach it, so the check asks where the map points.
    """

    score_atol: float = Field(gt=0)
    cam_atol: float = Field(gt=0)
    cam_min_overlap: float | None = Field(default=None, ge=0, le=1)
    #: Largest difference of a golden DICOM series' (calibrated) series score.
    series_atol: float | None = Field(default=None, gt=0)


class Lineage(_Strict):
    """Where a package came from: its predecessor, its data and its code."""

    parent_version: str | None = None
    dataset_manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: Content hash of the sealed test set the package's ``metrics.test`` was measured on.
    sealed_test_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    code_revision: str | None = None
    #: Content hashes of spent sealed sets (read by earlier releases) trained on.
    retired_sealed_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = []


class Variant(_Strict):
    """One runnable model file set: a backend at a precision."""

    backend: Literal["onnxruntime", "openvino"]
    precision: Literal["fp32", "int8"]
    files: list[str] = Field(min_length=1)
    test_auc: float = Field(ge=0, le=1)
    tolerance: Tolerance
    options: dict[str, str] = {}
    """Backend options the golden outputs were produced with (OpenVINO compile config)."""


class ExcludedVariant(_Strict):
    """A variant built but left out of the package, and why."""

    backend: Literal["onnxruntime", "openvino"]
    precision: Literal["fp32", "int8"]
    reason: str


class GoldenSeries(_Strict):
    """One golden case: a small DICOM series in the package and the verdict it must give.

    ``score`` is the calibrated series score FP32 gave at build time and ``flag`` the
    decision; each variant must reproduce the score within its tolerance and the flag
    exactly, from the DICOM files through decode, preprocessing and aggregation.
    """

    name: str
    files: list[str] = Field(min_length=1)
    label: int = Field(ge=0, le=1)
    score: float = Field(ge=0, le=1)
    flag: bool


class FileEntry(_Strict):
    """A file in the package with its size and sha256 (hex)."""

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _safe(cls, v: str) -> str:
        try:
            check_member_name(v)
        except PackageError as e:
            raise ValueError(str(e)) from e
        return v


class Manifest(_Strict):
    """The signed description of a model package (``manifest.json``)."""

    format_version: Literal[1]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(pattern=_SEMVER)
    task: Literal["binary-triage"]
    finding: str
    labels: list[str] = Field(min_length=2, max_length=2)
    input: InputSpec
    outputs: Outputs
    aggregation: Aggregation
    operating_point: OperatingPoint
    variants: list[Variant] = Field(min_length=1)
    excluded_variants: list[ExcludedVariant] = []
    golden: str
    drift_reference: str
    model_card: str
    files: list[FileEntry] = Field(min_length=1)
    signing_public_key: str
    created: str
    provenance: dict[str, Any] = {}
    #: Optional: packages built before constraints existed keep working unconstrained.
    input_constraints: InputConstraints | None = None
    #: Optional, so packages built before these existed keep verifying.
    calibration: Calibration | None = None
    lineage: Lineage | None = None
    #: Machine-readable evaluation at the operating point: split -> variant -> metrics.
    metrics: dict[str, dict[str, Any]] = {}
    #: Golden DICOM cases (each a folder of slices in the package) checked end to end.
    golden_series: list[GoldenSeries] = []
    #: The finding's code for the SR (value, scheme designator, meaning), from the model's
    #: spec; none: the box looks the finding's words up (``appliance.report.finding_code``).
    finding_code: tuple[str, str, str] | None = None

    @field_validator("finding_code")
    @classmethod
    def _code(cls, v: tuple[str, str, str] | None) -> tuple[str, str, str] | None:
        if v is not None and not all(part.strip() and len(part) <= 64 for part in v):
            raise ValueError("must be [code value, coding scheme designator, code meaning], none empty")
        return v

    @field_validator("signing_public_key")
    @classmethod
    def _key(cls, v: str) -> str:
        public_key_from_b64(v)
        return v

    @model_validator(mode="after")
    def _references_listed(self) -> Manifest:
        listed = [f.path for f in self.files]
        if len(set(listed)) != len(listed):
            raise ValueError("files: a path is listed twice")
        refs = {"golden": [self.golden], "drift_reference": [self.drift_reference], "model_card": [self.model_card]}
        for i, v in enumerate(self.variants):
            refs[f"variants.{i}.files"] = v.files
        for i, g in enumerate(self.golden_series):
            refs[f"golden_series.{i}.files"] = g.files
        for field, paths in refs.items():
            for p in paths:
                if p not in listed:
                    raise ValueError(f"{field}: {p!r} is not listed in files")
        return self

    def series_score(self, image_scores: np.ndarray) -> float:
        """The score the operating point applies to: aggregated per-image scores, then
        calibrated when the package carries a calibration (pure)."""
        raw = min(max(self.aggregation.apply(image_scores), 0.0), 1.0)
        return self.calibration.apply(raw) if self.calibration is not None else raw

    @property
    def signing_key_id(self) -> str:
        """Short id of the signing key (see :func:`key_id`)."""
        return key_id(public_key_from_b64(self.signing_public_key))


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """Raw public key, base64, as stored in ``Manifest.signing_public_key``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(v: str) -> Ed25519PublicKey:
    """The raw base64 ed25519 key of ``Manifest.signing_public_key`` (ValueError if not one)."""
    try:
        raw = base64.b64decode(v, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise ValueError(f"not a base64 raw ed25519 public key ({e})") from e


def check_member_name(name: str) -> None:
    """A package member's name must be a plain, normalised relative path (PackageError if not)."""
    p = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise PackageError(f"path traversal: member name {name!r} is not a plain relative path")
    if any(part in ("..", ".", "") for part in name.split("/")) or p.is_absolute():
        raise PackageError(f"path traversal: member name {name!r} escapes or is not normalised")

"""The records triage hands to the outcome stage (they live here, the lower stage of the
two, so that both can import them).

:class:`SeriesInputs` is a series made ready for a model; :class:`Verdict` is what a
model made of it; :class:`Decision` is how triage decided one claimed job: ``triaged``
with the active model's verdict, ``not-eligible`` or ``failed`` with the reason (and,
for a series a routing rule claimed, why it was not analysed, for the notice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from appliance.jobs import Job
from appliance.models.registry import InstalledModel
from appliance.report.content import Code
from appliance.states import SeriesState


@dataclass(frozen=True)
class SeriesInputs:
    """A series decoded and preprocessed for one model, in slice order."""

    inputs: np.ndarray  # (N, C, S, S) float32
    origins: list[tuple[Path, int]]  # where each input came from: (file, frame)
    input_sha256: str  # ``pipeline.input_sha256``: what the model read, for the audit trail
    drift_features: dict  # appliance.drift.features.series_features, from the same decoded pixels


@dataclass(frozen=True)
class Verdict:
    """What a model made of one series: its score against the package's operating point,
    and the key slice (the highest-scoring image) with its class-activation map."""

    score: float
    flag: bool
    threshold: float
    key_path: Path
    key_frame: int
    key_cam: np.ndarray
    image_scores: np.ndarray
    input_sha256: str


@dataclass(frozen=True)
class KeyImage:
    """The key slice as the heat-map capture shows it: its header and frame, its pixels in
    display units (HU for CT), the heat map over it in [0, 1], and the model's windows
    (centre, width; the first one displays it)."""

    dataset: Dataset
    frame: int
    pixels: np.ndarray
    heat: np.ndarray
    windows: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Claim:
    """A routing rule took the series: the rule, the model id it names, and that id's
    active version (None when none is active)."""

    rule: str
    model_id: str
    procedure: tuple[str, str, str] | None
    model: InstalledModel | None


@dataclass(frozen=True)
class Run:
    """One model over a series' inputs: which version, backend and precision, and its
    verdict, or why it gave none (a shadow model's failure is audited, never shown)."""

    model: InstalledModel
    backend: str  # backend/device, e.g. "onnxruntime/CPU"
    precision: str
    verdict: Verdict | None
    error: str | None = None

    @property
    def variant(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass(frozen=True)
class Decision:
    """How triage decided one claimed job.

    ``claim`` is the routing rule that took the series (None when none did). A claimed
    series that ends without a verdict carries ``notice``, the reason code of its "not
    analysed" notice, and the source ``headers`` the notice (or the result objects)
    reference. ``inputs``, ``run`` and ``key`` are set when the active model ran.
    """

    job: Job
    state: SeriesState
    reason: str | None = None
    claim: Claim | None = None
    headers: tuple[Dataset, ...] = ()
    notice: Code | None = None
    inputs: SeriesInputs | None = None
    run: Run | None = None
    key: KeyImage | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def triaged(
        cls,
        job: Job,
        claim: Claim,
        headers: tuple[Dataset, ...],
        inputs: SeriesInputs,
        run: Run,
        key: KeyImage,
        timings: Mapping[str, float],
    ) -> Decision:
        return cls(job, SeriesState.TRIAGED, None, claim, headers, None, inputs, run, key, timings)

    @classmethod
    def not_eligible(
        cls,
        job: Job,
        reason: str,
        claim: Claim | None = None,
        headers: tuple[Dataset, ...] = (),
        notice: Code | None = None,
    ) -> Decision:
        return cls(job, SeriesState.NOT_ELIGIBLE, reason, claim, headers, notice)

    @classmethod
    def failed(
        cls,
        job: Job,
        reason: str,
        claim: Claim | None = None,
        headers: tuple[Dataset, ...] = (),
        notice: Code | None = None,
    ) -> Decision:
        return cls(job, SeriesState.FAILED, reason, claim, headers, notice)

"""Triage of one claimed job: route it, check the model's input constraints, run the
active model, and say how it went as a :class:`~appliance.outcome.decision.Decision`.

Every way a job can end becomes a Decision here, the one place an exception turns into
a reason: no routing rule takes the series (``not-eligible``); it is outside the model's
input constraints (``not-eligible``, with a notice); it cannot be read or decoded, the
model gives NaN or runs past the deadline, the worker runs out of memory, or a bug
(``failed``, with the reason and, for a series a rule claimed, a notice). There is no
path to a silent negative. The shadow model runs separately (:meth:`Triage.shadow`),
after the active model's result is recorded, so it never delays it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset

from appliance import jobs, report
from appliance.config import WorkerSettings
from appliance.errors import ApplianceError, DecodeError, InferenceError, InferenceTimeout, internal_error
from appliance.jobs import Job, SeriesFacts
from appliance.models.backends import Runtime
from appliance.models.registry import InstalledModel, ModelRegistry
from appliance.outcome.decision import Claim, Decision, KeyImage, Run, Verdict
from appliance.pixels import to_hu
from appliance.states import ModelState
from appliance.triage import pipeline
from appliance.triage.constraints import first_violation
from appliance.triage.decode import check_transfer_syntax, decode_instance, read_header
from appliance.triage.routing import RoutingTable

LOG = logging.getLogger(__name__)
OUT_OF_MEMORY = "out of memory: the series needs more than the worker's memory limit (worker.memory_limit_mb)"


class Triage:
    """Decides claimed jobs with the registry's models and the routing table."""

    def __init__(self, registry: ModelRegistry, routing: RoutingTable, settings: WorkerSettings):
        self.registry = registry
        self.routing = routing
        self.settings = settings
        self._runtimes: dict[tuple[str, str], Runtime] = {}

    def warm_up(self) -> None:
        """Run every active model once and build throwaway result objects, so the first
        study does not pay for ONNX Runtime's first run or highdicom's table loading."""
        for model in self.registry.in_state(ModelState.ACTIVE):
            try:
                golden = np.load(model.path / model.manifest.golden)["input"][:1]
                self._runtime(model).run(golden)
            except Exception:
                LOG.exception("warm-up of %s failed; it will be retried on its first series", model.label)
        report.warm_up()

    def decide(self, job: Job) -> Decision:
        """How this job ends (never raises)."""
        claimed_at = time.time()
        try:
            facts = self._facts(job)
        except ApplianceError as exc:  # DecodeError: an unreadable header, a changed transfer syntax
            return self._unreadable(job, str(exc))
        rule, why = self.routing.route(facts)
        if rule is None:
            return Decision.not_eligible(job, why)
        claim = Claim(rule.name, rule.model, rule.procedure_code, self._model(rule.model, ModelState.ACTIVE))
        headers: tuple[Dataset, ...] = ()
        try:
            headers = tuple(read_header(stored.path) for stored in job.files)
            return self._run(job, claim, headers, claimed_at, rule.series_timeout_s)
        except InferenceTimeout as exc:
            return self._failed(job, str(exc), claim, headers, report.ANALYSIS_TIMED_OUT)
        except ApplianceError as exc:  # InferenceError, DecodeError, PackageError: said as the reason
            return self._failed(job, str(exc), claim, headers)
        except MemoryError:  # the big arrays are gone with the frames that held them
            LOG.error("job %d: out of memory", job.id)
            return self._failed(job, OUT_OF_MEMORY, claim, headers)
        except Exception as exc:  # a bug: said, and the series still gets its notice
            LOG.exception("job %d failed", job.id)
            return self._failed(job, internal_error(exc), claim, headers)

    def shadow(self, decision: Decision) -> Run | None:
        """The shadow model of the decision's model id on the same inputs, if one shadows it."""
        if decision.inputs is None or decision.claim is None:
            return None
        model = self._model(decision.claim.model_id, ModelState.SHADOW)
        if model is None:
            return None
        try:
            runtime = self._runtime(model)
        except ApplianceError as exc:
            return Run(model, "-", "-", None, str(exc))
        try:
            verdict = pipeline.run(
                runtime, model.manifest, decision.inputs, self.settings.batch_size, self._deadline(time.time())
            )
        except InferenceError as exc:
            return Run(model, runtime.target.label, runtime.precision, None, str(exc))
        return Run(model, runtime.target.label, runtime.precision, verdict)

    def abandoned(self, job: Job) -> Decision:
        """The decision for a job :func:`appliance.jobs.claim` gave up on: its series
        failed, and a series a rule claims gets its notice like any other failure."""
        reason = jobs.abandoned_reason(job.attempts)
        try:
            rule, _ = self.routing.route(self._facts(job))
        except Exception:
            LOG.exception("job %d: abandoned, and its series cannot be routed for a notice", job.id)
            return Decision.failed(job, reason)
        if rule is None:
            return Decision.failed(job, reason)
        claim = Claim(rule.name, rule.model, rule.procedure_code, self._model(rule.model, ModelState.ACTIVE))
        return self._failed(job, reason, claim, ())

    # Steps ------------------------------------------------------------------------------
    def _run(
        self, job: Job, claim: Claim, headers: tuple[Dataset, ...], claimed_at: float, timeout_s: float | None
    ) -> Decision:
        """The active model over the series, and the key slice for the capture."""
        model = claim.model
        if model is None:
            return self._failed(
                job, f"no active model for {claim.model_id} (routing rule {claim.rule!r})", claim, headers
            )
        violation = first_violation(model.manifest.input_constraints, list(headers))
        if violation is not None:
            reason = f"outside the model's input constraints: {violation}"
            return Decision.not_eligible(job, reason, claim, headers, report.OUTSIDE_INPUT_CONSTRAINTS)
        inputs = pipeline.prepare(model.manifest, [stored.path for stored in job.files])
        prepared_at = time.time()
        runtime = self._runtime(model)
        verdict = pipeline.run(
            runtime, model.manifest, inputs, self.settings.batch_size, self._deadline(claimed_at, timeout_s)
        )
        inferred_at = time.time()
        key = _key_image(model, verdict)
        timings = {
            "queue_wait_s": round(claimed_at - job.created_at, 4),
            "decode_s": round(prepared_at - claimed_at, 4),
            "inference_s": round(inferred_at - prepared_at, 4),
            "output_s": round(time.time() - inferred_at, 4),  # the outcome stage adds its part
        }
        run = Run(model, runtime.target.label, runtime.precision, verdict)
        return Decision.triaged(job, claim, headers, inputs, run, key, timings)

    def _facts(self, job: Job) -> SeriesFacts:
        """What routing looks at: the indexed facts, with the first file's SOP class and
        Image Type. Each file must still be in the transfer syntax it was received in."""
        for stored in job.files:
            check_transfer_syntax(stored.path, stored.transfer_syntax_uid)  # decoded only under what was negotiated
        if not job.files:
            raise DecodeError(f"series {job.series_instance_uid} has no stored instance")
        first = job.files[0].path
        try:
            header = read_header(first)
            image_type = tuple(str(v) for v in getattr(header, "ImageType", []) or [])
            sop_class_uid = str(header.SOPClassUID)
        except Exception as exc:  # pydicom reads lazily: a bad element surfaces on access
            raise DecodeError(f"{first.name}: cannot read the header: {type(exc).__name__}: {exc}") from exc
        return replace(job.facts, sop_class_uid=sop_class_uid, image_type=image_type)

    def _unreadable(self, job: Job, reason: str) -> Decision:
        """A series whose files could not be read for routing fails; the rule its indexed
        facts match (a rule that needs Image Type cannot) claims it, for the notice."""
        rule, _ = self.routing.route(job.facts)
        headers = _readable_headers(job) if rule is not None else ()
        if rule is None or not headers:
            if rule is not None:
                LOG.warning("job %d: no header of the series reads; it fails without a notice", job.id)
            return Decision.failed(job, reason)
        claim = Claim(rule.name, rule.model, rule.procedure_code, self._model(rule.model, ModelState.ACTIVE))
        return Decision.failed(job, reason, claim, headers, report.ANALYSIS_FAILED)

    def _failed(
        self,
        job: Job,
        reason: str,
        claim: Claim,
        headers: tuple[Dataset, ...],
        notice: report.Code = report.ANALYSIS_FAILED,
    ) -> Decision:
        """A claimed series that failed, with the headers its notice references (those that
        still read whole when the full read did not get that far)."""
        return Decision.failed(job, reason, claim, headers or _readable_headers(job), notice)

    def _model(self, model_id: str, state: ModelState) -> InstalledModel | None:
        return next((m for m in self.registry.in_state(state) if m.id == model_id), None)

    def _runtime(self, model: InstalledModel) -> Runtime:
        key = (model.id, model.version)
        if key not in self._runtimes:
            self._runtimes[key] = model.load_chosen()
        return self._runtimes[key]

    def _deadline(self, started: float, timeout_s: float | None = None) -> float:
        """The series deadline on the monotonic clock, counted from when it was claimed
        (the rule's own timeout if it has one, capped by the worker's)."""
        limit = self.settings.series_timeout_s
        limit = min(limit, timeout_s) if timeout_s is not None else limit
        return time.monotonic() + limit - (time.time() - started)


def _key_image(model: InstalledModel, verdict: Verdict) -> KeyImage:
    """The key slice decoded again, in display units, with the heat map over it."""
    key = decode_instance(verdict.key_path)[verdict.key_frame]
    windows = tuple((w.center, w.width) for w in model.manifest.input.windows)
    pixels = to_hu(key.pixels, key.slope, key.intercept)
    return KeyImage(key.dataset, verdict.key_frame, pixels, pipeline.heat_map(verdict.key_cam), windows)


def _readable_headers(job: Job) -> tuple[Dataset, ...]:
    """The headers of the series that still read whole and belong to its study (a notice
    needs the source's patient and study); the others are left out, and logged."""
    headers = []
    for stored in job.files:
        try:
            ds = read_header(stored.path)
            list(ds)  # pydicom reads lazily: a bad element surfaces here, not in the notice
        except Exception as exc:  # noqa: BLE001 - any failure to read leaves the file out of the notice
            LOG.info("job %d: %s left out of the notice: %s", job.id, stored.path.name, type(exc).__name__)
            continue
        if "SOPClassUID" in ds and str(ds.get("StudyInstanceUID", "")) == job.study_instance_uid:
            headers.append(ds)
    return tuple(headers)

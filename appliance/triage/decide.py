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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from appliance import jobs, report
from appliance.config import WorkerSettings
from appliance.errors import ApplianceError, DecodeError, InferenceError, InferenceTimeout, internal_error
from appliance.jobs import Job, SeriesFacts, StoredFile
from appliance.models.backends import Runtime
from appliance.models.manifest import Manifest
from appliance.models.registry import InstalledModel, ModelRegistry
from appliance.outcome.decision import Claim, Decision, KeyImage, Run, Verdict
from appliance.pixels import to_hu
from appliance.states import ModelState
from appliance.triage import pipeline
from appliance.triage.constraints import constraints_key, first_violation, instance_violation
from appliance.triage.decode import Slice, check_transfer_syntax, decode_instance, read_header
from appliance.triage.prepared import PreparedCache, PreparedInstance
from appliance.triage.routing import RoutingTable

LOG = logging.getLogger(__name__)
OUT_OF_MEMORY = "out of memory: the series needs more than the worker's memory limit (worker.memory_limit_mb)"


class Triage:
    """Decides claimed jobs with the registry's models and the routing table."""

    def __init__(self, registry: ModelRegistry, routing: RoutingTable, settings: WorkerSettings):
        self.registry = registry
        self.routing = routing
        self.settings = settings
        self.prepared = PreparedCache(settings.prepare_cache_mb * 1024 * 1024)
        self._unrouted: dict[str, SeriesFacts] = {}  # arriving series no rule took, as they stood
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
        """How this job ends (never raises). The series' prepared instances are used
        and then dropped."""
        try:
            return self._decide(job)
        finally:
            self.prepared.drop(job.series_instance_uid)

    def prepare_arrivals(self, arriving: list[tuple[str, tuple[StoredFile, ...], SeriesFacts]], budget: int) -> int:
        """Prepare up to ``budget`` instances of series still arriving (series UID, files
        in arrival order, indexed facts) for the active model a routing rule would pick
        now (``prepared.PreparedInstance``); forget the series not among them. Returns how
        many were prepared, or found not to check, read or decode (their job then fails on
        them as it would have)."""
        self.prepared.retain({uid for uid, _, _ in arriving})
        self._unrouted = {uid: facts for uid, _, facts in arriving if self._unrouted.get(uid) == facts}
        todo: list[tuple[str, str, StoredFile, Manifest]] = []
        for uid, files, facts in arriving:
            if len(todo) >= budget or not files or uid in self._unrouted or self.prepared.complete(uid, files):
                continue  # a job of a complete series checks its model's input key itself
            model = self._arrival_model(uid, files, facts)
            if model is None:
                self._unrouted[uid] = facts  # routed again when its facts change (another instance)
                continue
            key = pipeline.input_key(model.manifest.input)
            todo += [
                (uid, key, f, model.manifest) for f in self.prepared.missing(uid, key, files)[: budget - len(todo)]
            ]
        if not todo:
            return 0
        for uid, key, stored, manifest in todo:
            self.prepared.keep(uid, key, stored, _prepare_arrived(manifest, stored))
        return len(todo)

    def _arrival_model(self, uid: str, files: tuple[StoredFile, ...], facts: SeriesFacts) -> InstalledModel | None:
        """The active model a routing rule would take the series to, as it stands."""
        first = self.prepared.instances(uid, files[:1]).get(files[0].path)
        try:
            rule, _ = self.routing.route(_with_header(facts, files[0].path, first.header if first else None))
        except DecodeError:
            return None  # its job says why
        return self._model(rule.model, ModelState.ACTIVE) if rule is not None else None

    def _decide(self, job: Job) -> Decision:
        claimed_at = time.time()
        arrived = self.prepared.instances(job.series_instance_uid, job.files)
        try:
            facts = self._facts(job, arrived)
        except ApplianceError as exc:  # DecodeError: an unreadable header, a changed transfer syntax
            return self._unreadable(job, str(exc))
        rule, why = self.routing.route(facts)
        if rule is None:
            return Decision.not_eligible(job, why)
        claim = Claim(rule.name, rule.model, rule.procedure_code, self._model(rule.model, ModelState.ACTIVE))
        headers: tuple[Dataset, ...] = ()
        try:
            headers = tuple(
                arrived[stored.path].header if stored.path in arrived else read_header(stored.path)
                for stored in job.files
            )
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
        constraints = model.manifest.input_constraints
        arrived = self.prepared.instances(job.series_instance_uid, job.files)
        known = {
            index: arrived[stored.path].violation
            for index, stored in enumerate(job.files)
            if stored.path in arrived and arrived[stored.path].constraints_key == constraints_key(constraints)
        }
        violation = first_violation(constraints, list(headers), known)
        if violation is not None:
            reason = f"outside the model's input constraints: {violation}"
            return Decision.not_eligible(job, reason, claim, headers, report.OUTSIDE_INPUT_CONSTRAINTS)
        ready = self.prepared.ready(job.series_instance_uid, pipeline.input_key(model.manifest.input), job.files)
        decoded = pipeline.kept_decoded(ready)
        inputs = pipeline.prepare(
            model.manifest,
            [stored.path for stored in job.files],
            ready,
            lambda path, images: decoded.update(pipeline.kept_decoded({path: images})),
        )
        prepared_at = time.time()
        runtime = self._runtime(model)
        verdict = pipeline.run(
            runtime, model.manifest, inputs, self.settings.batch_size, self._deadline(claimed_at, timeout_s)
        )
        inferred_at = time.time()
        key = _key_image(model, verdict, decoded.get((verdict.key_path, verdict.key_frame)))
        timings = {
            "queue_wait_s": round(claimed_at - job.created_at, 4),
            "decode_s": round(prepared_at - claimed_at, 4),
            "inference_s": round(inferred_at - prepared_at, 4),
            "output_s": round(time.time() - inferred_at, 4),  # the outcome stage adds its part
        }
        run = Run(model, runtime.target.label, runtime.precision, verdict)
        return Decision.triaged(job, claim, headers, inputs, run, key, timings)

    def _facts(self, job: Job, arrived: Mapping[Path, PreparedInstance] | None = None) -> SeriesFacts:
        """What routing looks at: the indexed facts, with the first file's SOP class and
        Image Type. Each file must still be in the transfer syntax it was received in
        (those in ``arrived`` were checked as they arrived)."""
        arrived = arrived or {}
        for stored in job.files:
            if stored.path not in arrived:  # decoded only under what was negotiated
                check_transfer_syntax(stored.path, stored.transfer_syntax_uid)
        if not job.files:
            raise DecodeError(f"series {job.series_instance_uid} has no stored instance")
        first = arrived.get(job.files[0].path)
        return _with_header(job.facts, job.files[0].path, first.header if first else None)

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


def _with_header(facts: SeriesFacts, first: Path, header: Dataset | None = None) -> SeriesFacts:
    """The indexed facts with the first file's SOP class and Image Type (from ``header``,
    its header already read, else read now)."""
    try:
        header = read_header(first) if header is None else header
        image_type = tuple(str(v) for v in getattr(header, "ImageType", []) or [])
        sop_class_uid = str(header.SOPClassUID)
    except Exception as exc:  # pydicom reads lazily: a bad element surfaces on access
        raise DecodeError(f"{first.name}: cannot read the header: {type(exc).__name__}: {exc}") from exc
    return replace(facts, sop_class_uid=sop_class_uid, image_type=image_type)


def _prepare_arrived(manifest: Manifest, stored: StoredFile) -> PreparedInstance | None:
    """One arrived instance read once, prepared and checked, or None when that fails or
    the file names another transfer syntax than the one negotiated: its job does it all
    again (``check_transfer_syntax``, ``read_header``) and fails with the reason, as
    without preparation. The header is the dataset as decoded, its pixel data dropped."""
    try:
        images = pipeline.prepare_instance(manifest, stored.path)
        header = images[0].header
        if str(header.file_meta.get("TransferSyntaxUID", "")) != stored.transfer_syntax_uid:
            return None
        constraints = manifest.input_constraints
        violation = instance_violation(constraints, header) if constraints is not None else None
        return PreparedInstance(header, images, constraints_key(constraints), violation)
    except Exception:  # noqa: BLE001 - said by the job, which meets the same failure
        return None


def _key_image(model: InstalledModel, verdict: Verdict, decoded: Slice | None) -> KeyImage:
    """The key slice in display units with the heat map over it: as preparation kept it
    decoded, else decoded again."""
    key = decoded if decoded is not None else decode_instance(verdict.key_path)[verdict.key_frame]
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

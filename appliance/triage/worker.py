"""The inference worker: claim a job, route it, run the pipeline, build the report, record.

Each step lives in its stage: the queue in :mod:`appliance.jobs`, routing in
:mod:`appliance.triage.routing`, decoding, inference and the decision in
:mod:`appliance.triage.pipeline`, the result objects in :mod:`appliance.report`, and the
one transaction that records the outcome in :mod:`appliance.triage.record`. A series
ends ``not-eligible`` (no rule takes it, or it is outside the model's input constraints)
or ``failed`` (with the reason) or ``triaged``; a shadow model then runs on the same
inputs, audited and compared, never sent or shown. A series a rule claimed that ends
without a result gets a "not analysed" notice in PACS, so silence never looks like
"not flagged".
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import sqlite_utils
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from appliance import installation, jobs, report
from appliance.config import Settings
from appliance.db import transaction
from appliance.errors import ApplianceError, DecodeError, InferenceError, InferenceTimeout, LeaseLost
from appliance.jobs import Job
from appliance.models.backends import Runtime
from appliance.models.registry import InstalledModel, ModelRegistry
from appliance.pixels import to_hu
from appliance.states import ModelState, SeriesState
from appliance.triage import pipeline, record
from appliance.triage.constraints import first_violation
from appliance.triage.decode import check_transfer_syntax, decode_instance, read_header
from appliance.triage.routing import RoutingRule, RoutingTable, SeriesFacts, load_routing

LOG = logging.getLogger(__name__)
OUT_OF_MEMORY = "out of memory: the series needs more than the worker's memory limit (worker.memory_limit_mb)"


def dead_on_this_host(owner: str, me: str) -> bool:
    """Whether a lease owner ``host:pid:thread`` is a process of this host that no longer
    runs (never ourselves; owners named otherwise are left to their lease)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != me.partition(":")[0] or not pid.isdigit() or owner.split(":")[:2] == me.split(":")[:2]:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Worker:
    """Claims jobs and triages series until stopped."""

    def __init__(
        self,
        settings: Settings,
        db: sqlite_utils.Database,
        name: str | None = None,
        on_recorded: Callable[[], None] = lambda: None,
    ):
        self.settings = settings
        self.db = db
        self.on_recorded = on_recorded  # e.g. wake the sender: results are in the outbox
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.registry = ModelRegistry(
            db, settings.models_dir, list(settings.models.trusted_keys), settings.models.pin_backend
        )
        self.routing: RoutingTable = load_routing(settings.worker.routing_file)
        self.install_id = installation.install_id(settings.data_dir)
        self.device_uid = report.device_uid(settings.report.uid_root, self.install_id)
        self._runtimes: dict[tuple[str, str], Runtime] = {}
        self._stop = threading.Event()

    # Loop -----------------------------------------------------------------------------
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

    def run(self) -> None:
        self.expire_dead_incarnations()
        self.warm_up()
        while not self._stop.is_set():
            if not self.run_once():
                self._stop.wait(self.settings.worker.poll_interval_s)

    def stop(self) -> None:
        self._stop.set()

    def expire_dead_incarnations(self, now: float | None = None) -> None:
        """End the leases held by workers of this host whose process is gone (a worker
        killed mid-series and restarted): their series are taken again at once."""
        with transaction(self.db.conn) as conn:
            expired = jobs.expire_leases_of(
                conn, lambda owner: dead_on_this_host(owner, self.name), time.time() if now is None else now
            )
        if expired:
            LOG.warning("took back %d job(s) from a worker process that died: %s", len(expired), expired)

    def run_once(self, now: float | None = None) -> bool:
        """Claim and process one job; False when there was none."""
        worker = self.settings.worker
        abandoned: list[Job] = []
        with transaction(self.db.conn) as conn:
            job = jobs.claim(
                conn, self.name, worker.lease_s, worker.max_attempts, time.time() if now is None else now, abandoned
            )
        for lost in abandoned:
            self._notify_abandoned(lost)
        if job is None:
            return False
        try:
            self.process(job)
        except LeaseLost:
            LOG.warning("job %d: lease expired before the result was recorded; another worker has it", job.id)
        except MemoryError:
            LOG.error("job %d: out of memory", job.id)
            self._end(job, SeriesState.FAILED, OUT_OF_MEMORY)
        except Exception as exc:  # whatever went wrong is said, never swallowed into a negative
            LOG.exception("job %d failed", job.id)
            self._end(job, SeriesState.FAILED, f"internal error: {type(exc).__name__}: {exc}"[:500])
        return True

    # One job --------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        claimed_at = time.time()
        try:
            paths, facts = self._series(job)
        except ApplianceError as exc:  # DecodeError: an unreadable header, a changed transfer syntax
            self._end(job, SeriesState.FAILED, str(exc), self._claim_unread(job))
            return
        rule, why = self.routing.route(facts)
        if rule is None:
            self._end(job, SeriesState.NOT_ELIGIBLE, why)
            return
        headers: list[Dataset] = []
        active = self._model(rule.model, ModelState.ACTIVE)
        try:
            headers = [read_header(path) for path in paths]
            if active is None:
                self._end(
                    job,
                    SeriesState.FAILED,
                    f"no active model for {rule.model} (routing rule {rule.name!r})",
                    _Claim(rule, None, headers, report.ANALYSIS_FAILED),
                )
                return
            violation = first_violation(active.manifest.input_constraints, headers)
            if violation is not None:
                self._end(
                    job,
                    SeriesState.NOT_ELIGIBLE,
                    f"outside the model's input constraints: {violation}",
                    _Claim(rule, active, headers, report.OUTSIDE_INPUT_CONSTRAINTS),
                )
                return
            prepared, result = self._triage(job, rule, active, paths, headers, claimed_at)
        except LeaseLost:
            raise
        except InferenceTimeout as exc:
            self._end(job, SeriesState.FAILED, str(exc), _Claim(rule, active, headers, report.ANALYSIS_TIMED_OUT))
        except ApplianceError as exc:  # InferenceError, DecodeError, PackageError: said as the reason
            self._end(job, SeriesState.FAILED, str(exc), _Claim(rule, active, headers, report.ANALYSIS_FAILED))
        except MemoryError:  # the big arrays are gone with the frames that held them
            LOG.error("job %d: out of memory", job.id)
            self._end(job, SeriesState.FAILED, OUT_OF_MEMORY, _Claim(rule, active, headers, report.ANALYSIS_FAILED))
        except Exception as exc:  # a bug: said, and the series still gets its notice
            LOG.exception("job %d failed", job.id)
            self._end(
                job,
                SeriesState.FAILED,
                f"internal error: {type(exc).__name__}: {exc}"[:500],
                _Claim(rule, active, headers, report.ANALYSIS_FAILED),
            )
        else:
            shadow = self._model(rule.model, ModelState.SHADOW)
            if shadow is not None:
                self._shadow(job, shadow, prepared, result)

    def _triage(
        self,
        job: Job,
        rule: RoutingRule,
        active: InstalledModel,
        paths: list[Path],
        headers: list[Dataset],
        claimed_at: float,
    ) -> tuple[tuple, pipeline.SeriesResult]:
        """Run the active model, build and record the result; returns what the shadow reuses."""
        manifest = active.manifest
        prepared = pipeline.prepare(manifest, paths)
        prepared_at = time.time()
        runtime = self._runtime(active)
        result = pipeline.run(
            runtime,
            manifest,
            prepared,
            self.settings.worker.batch_size,
            self._deadline(claimed_at, rule.series_timeout_s),
        )
        inferred_at = time.time()
        objects = self._report(job, rule, active, runtime, result, headers)
        timings = {
            "queue_wait_s": round(claimed_at - job.created_at, 4),
            "decode_s": round(prepared_at - claimed_at, 4),
            "inference_s": round(inferred_at - prepared_at, 4),
            "output_s": round(time.time() - inferred_at, 4),
        }
        record.triaged(
            self.db.conn,
            job,
            self.name,
            record.Ran(active, runtime, result),
            timings,
            objects,
            self.settings.dicom.destinations,
            time.time(),
            self.settings.drift,
            prepared[3],
        )
        self.on_recorded()
        LOG.info(
            "series triaged: flag=%s score=%.3f model=%s (%s)",
            result.flag,
            result.score,
            active.label,
            json.dumps(timings),
        )
        return prepared, result

    def _series(self, job: Job) -> tuple[list[Path], SeriesFacts]:
        """The series' stored files and what routing looks at."""
        paths, negotiated, indexed = self._indexed(job)
        for path, syntax in zip(paths, negotiated, strict=True):
            check_transfer_syntax(path, syntax)  # decoded only under what was negotiated
        try:
            first = read_header(paths[0])
            image_type = tuple(str(v) for v in getattr(first, "ImageType", []) or [])
            sop_class_uid = str(first.SOPClassUID)
        except Exception as exc:  # pydicom reads lazily: a bad element surfaces on access
            raise DecodeError(f"{paths[0].name}: cannot read the header: {type(exc).__name__}: {exc}") from exc
        return paths, replace(indexed, sop_class_uid=sop_class_uid, image_type=image_type)

    def _indexed(self, job: Job) -> tuple[list[Path], list[str], SeriesFacts]:
        """The series' stored files, their negotiated transfer syntaxes, and the routing
        facts the listener indexed (no Image Type: that is only in the files)."""
        conn = self.db.conn
        rows = conn.execute(
            "SELECT path, transfer_syntax_uid, sop_class_uid FROM instances "
            "WHERE series_instance_uid = ? ORDER BY received_at",
            (job.series_instance_uid,),
        ).fetchall()
        calling_ae, modality, body_part, description = conn.execute(
            "SELECT calling_ae, modality, body_part, series_description FROM series WHERE series_instance_uid = ?",
            (job.series_instance_uid,),
        ).fetchone()
        facts = SeriesFacts(
            modality=modality,
            body_part=body_part,
            sop_class_uid=rows[0][2] if rows else "",
            series_description=description,
            instances=len(rows),
            calling_ae=calling_ae,
        )
        return [Path(row[0]) for row in rows], [row[1] for row in rows], facts

    def _claim_unread(self, job: Job) -> _Claim | None:
        """The claim on a series whose files could not be read for routing: the rule its
        indexed facts match (a rule that needs Image Type cannot match), with the headers
        that still read whole, for the notice. None when no rule matches, or when no header
        of this study reads (a notice needs the source's patient and study)."""
        paths, _, facts = self._indexed(job)
        rule, _ = self.routing.route(facts)
        if rule is None:
            return None
        headers = []
        for path in paths:
            try:
                ds = read_header(path)
                list(ds)  # pydicom reads lazily: a bad element surfaces here, not in the notice
            except Exception as exc:  # noqa: BLE001 - any failure to read leaves the file out of the notice
                LOG.info("job %d: %s left out of the notice: %s", job.id, path.name, type(exc).__name__)
                continue
            if "SOPClassUID" in ds and str(ds.get("StudyInstanceUID", "")) == job.study_instance_uid:
                headers.append(ds)
        if not headers:
            LOG.warning("job %d: no header of the series reads; it fails without a notice", job.id)
            return None
        return _Claim(rule, self._model(rule.model, ModelState.ACTIVE), headers, report.ANALYSIS_FAILED)

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
        limit = self.settings.worker.series_timeout_s
        limit = min(limit, timeout_s) if timeout_s is not None else limit
        return time.monotonic() + limit - (time.time() - started)

    def _uids(self, job: Job) -> report.ResultUids:
        return report.ResultUids.derive(
            self.settings.report.uid_root, self.install_id, job.series_instance_uid, job.generation
        )

    def _report(
        self,
        job: Job,
        rule: RoutingRule,
        model: InstalledModel,
        runtime: Runtime,
        result: pipeline.SeriesResult,
        headers: list[Dataset],
    ) -> list[tuple[Path, Dataset]]:
        """Build the SR and the heat-map capture and write them under the results folder."""
        code = report.finding_code(model.manifest.finding)
        if code is None:
            raise InferenceError(f"no coded finding for {model.manifest.finding!r}")
        decision = report.TriageDecision(
            task=model.id,
            finding=model.manifest.finding[:64],
            finding_code=code,
            flag=result.flag,
            score=result.score,
            threshold=result.threshold,
            model_id=model.id,
            model_version=model.version,
            model_sha256=model.package_sha256,
            decided_at=dt.datetime.now(dt.UTC),
            variant=f"{runtime.target.label}/{runtime.precision}"[:64],
        )
        key = decode_instance(result.key_path)[result.key_frame]
        windows = [(w.center, w.width) for w in model.manifest.input.windows]
        objects = report.build_result_objects(
            headers,
            key.dataset,
            to_hu(key.pixels, key.slope, key.intercept),
            windows,
            pipeline.heat_map(result.key_cam),
            decision,
            self._uids(job),
            device_uid=self.device_uid,
            key_frame=result.key_frame,
            predecessors=self._predecessors(job),
            procedure=rule.procedure_code,
        )
        return report.write_objects(objects, self.settings.results_dir / job.study_instance_uid)

    def _predecessors(self, job: Job) -> list[Dataset]:
        """The series' current SR from an earlier generation, which the new one replaces."""
        found = record.current_result_sr(self.db.conn, job.series_instance_uid, job.generation)
        if found is None:
            return []
        path = self.settings.results_dir / found[0] / f"{found[1]}.dcm"
        try:
            return [dcmread(path)]
        except (OSError, ValueError, InvalidDicomError) as exc:
            LOG.warning("job %d: the SR it replaces cannot be read (%s); sent without predecessor", job.id, exc)
            return []

    def _notice(self, job: Job, claim: _Claim, reason: str) -> tuple[str, Path, Dataset] | None:
        """Build and write the "not analysed" notice; None (logged) when it cannot be built."""
        try:
            model = claim.model
            notice = report.NotAnalysed(
                task=claim.rule.name[:64],
                finding=(model.manifest.finding[:64] if model else ""),
                reason=reason,
                reason_code=claim.code,
                model_id=claim.rule.model[:64],
                model_version=model.version if model else "",
                decided_at=dt.datetime.now(dt.UTC),
            )
            headers = claim.headers or [read_header(path) for path in self._series(job)[0]]
            built = report.build_notice(
                headers, notice, self._uids(job), device_uid=self.device_uid, procedure=claim.rule.procedure_code
            )
            ((path, ds),) = report.write_objects([built], self.settings.results_dir / job.study_instance_uid)
            return claim.code[0], path, ds
        except Exception:  # the series still ends with its reason; only the notice is missing
            LOG.exception("job %d: the not-analysed notice could not be built", job.id)
            return None

    def _shadow(self, job: Job, model: InstalledModel, prepared, active: pipeline.SeriesResult) -> None:
        runtime = self._runtime(model)
        try:
            result, error = (
                pipeline.run(
                    runtime, model.manifest, prepared, self.settings.worker.batch_size, self._deadline(time.time())
                ),
                None,
            )
        except InferenceError as exc:
            result, error = None, str(exc)
        record.shadow(self.db.conn, job, model, runtime, result, error, active, time.time())

    def _notify_abandoned(self, job: Job) -> None:
        """A job given up after its worker stopped on every attempt: the series failed, and a
        series a rule claimed gets its "not analysed" notice like any other failure."""
        try:
            paths, facts = self._series(job)
            rule, _ = self.routing.route(facts)
        except Exception:
            LOG.exception("job %d: abandoned, and its series cannot be routed for a notice", job.id)
            return
        if rule is None:
            return
        reason = self.db.conn.execute(
            "SELECT reason FROM series WHERE series_instance_uid = ?", (job.series_instance_uid,)
        ).fetchone()[0]
        notice = self._notice(
            job, _Claim(rule, self._model(rule.model, ModelState.ACTIVE), [], report.ANALYSIS_FAILED), reason
        )
        if notice is not None and record.abandoned_notice(
            self.db.conn, job, notice, self.settings.dicom.destinations, time.time()
        ):
            self.on_recorded()

    def _end(self, job: Job, series_state: SeriesState, reason: str, claim: _Claim | None = None) -> None:
        notice = self._notice(job, claim, reason) if claim is not None else None
        try:
            # Drift counts a failure of the routed model (not a refusal for its input constraints).
            model = claim.model if claim is not None and series_state == SeriesState.FAILED else None
            record.ended(
                self.db.conn,
                job,
                self.name,
                series_state,
                reason,
                time.time(),
                self.settings.drift,
                model,
                notice,
                self.settings.dicom.destinations,
            )
        except LeaseLost:
            return  # the lease went to another worker: it records the outcome
        if notice is not None:
            self.on_recorded()
        LOG.info("series %s: %s", series_state, reason)


@dataclass(frozen=True)
class _Claim:
    """A series a routing rule claimed: what its "not analysed" notice needs."""

    rule: RoutingRule
    model: InstalledModel | None
    headers: list[Dataset]
    code: tuple[str, str, str]

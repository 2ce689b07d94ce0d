"""The inference worker: jobs in, triage decisions, result objects and audit rows out.

For each claimed job: route the series (or end it ``not-eligible`` with the reason), run
the active model of the routed id (ending ``failed`` with the reason on any error), build
the SR and the heat-map secondary capture, then in ONE transaction that also checks the
job's lease is still ours: the inference row, its hash-chained audit row, the outbox rows
for each destination, the job ``done`` and the series ``triaged``. A shadow model then
runs on the same inputs; its result is audited and compared, never sent or shown.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import sqlite_utils

from appliance.audit import chain as audit_log
from appliance.config import Settings
from appliance import report
from appliance.triage.decode import decode_instance, read_header
from appliance.send.outbox import enqueue_in
from appliance.triage.routing import RoutingTable, SeriesFacts, load_routing
from appliance.errors import ApplianceError
from appliance.models import backends
from appliance.models.package import Manifest
from appliance.triage.pipeline import InferenceError, SeriesResult, heat_map, infer, prepare
from appliance.models.registry import InstalledModel, ModelRegistry
from appliance.db import transaction
from appliance.jobs import Job, LeaseLost, claim, complete

LOG = logging.getLogger(__name__)

#: Coded findings for the result SR, by the words a manifest's finding uses.
FINDING_CODES = (
    (("haemorrhage", "hemorrhage"), report.INTRACRANIAL_HEMORRHAGE),
    (("pneumothorax",), report.PNEUMOTHORAX),
    (("nodule",), report.PULMONARY_NODULE),
)


def finding_code(manifest: Manifest) -> tuple[str, str, str]:
    """The SNOMED CT code of a manifest's finding (pure)."""
    text = manifest.finding.lower()
    for words, code in FINDING_CODES:
        if any(word in text for word in words):
            return code
    raise InferenceError(f"no coded finding for {manifest.finding!r}")


@dataclass
class Loaded:
    """A model with its runtime on the backend chosen at activation."""

    model: InstalledModel
    runtime: backends.Runtime


class Worker:
    """Claims jobs and triages series until stopped."""

    def __init__(self, settings: Settings, db: sqlite_utils.Database, name: str | None = None,
                 on_recorded: Callable[[], None] = lambda: None):
        self.settings = settings
        self.db = db
        self.on_recorded = on_recorded  # e.g. wake the sender: results are in the outbox
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.registry = ModelRegistry(db, settings.models_dir, list(settings.models.trusted_keys),
                                      settings.models.pin_backend)
        self.routing: RoutingTable = load_routing(settings.worker.routing_file)
        self._loaded: dict[tuple[str, str], Loaded] = {}
        self._stop = threading.Event()

    # Loop -----------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load every active model and build one throwaway SR and capture, so the first
        study does not pay for ONNX Runtime's first run or highdicom's table loading."""
        for model in self.registry.in_state("active"):
            try:
                loaded = self._model(model.id, "active")
                assert loaded is not None
                golden = np.load(model.path / model.manifest.golden)["input"][:1]
                loaded.runtime.run(golden)
            except Exception:
                LOG.exception("warm-up of %s failed; it will be retried on its first series", model.label)
        source = pydicom.Dataset()
        source.SOPClassUID, source.SOPInstanceUID = pydicom.uid.CTImageStorage, pydicom.uid.generate_uid()
        source.StudyInstanceUID, source.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        source.Modality, source.Rows, source.Columns = "CT", 8, 8
        decision = report.TriageDecision("warm-up", "warm-up", report.INTRACRANIAL_HEMORRHAGE, False, 0.0, 0.5,
                                          "warm-up", "0.0.0", "0" * 64, dt.datetime.now(dt.timezone.utc))
        uids = report.ResultUids.from_key("warm-up")
        report.build_sr([source], decision, uids, device_uid=_device_uid())
        report.build_heatmap_capture(source, np.zeros((8, 8), np.float32), (40.0, 80.0),
                                      np.zeros((2, 2), np.float32), decision, uids)

    def run(self) -> None:
        self.warm_up()
        while not self._stop.is_set():
            if not self.run_once():
                self._stop.wait(self.settings.worker.poll_interval_s)

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> bool:
        """Claim and process one job; False when there was none."""
        worker = self.settings.worker
        job = claim(self.db.conn, self.name, worker.lease_s, worker.max_attempts, time.time())
        if job is None:
            return False
        try:
            self.process(job)
        except LeaseLost:
            LOG.warning("job %d: lease expired before the result was recorded; another worker has it", job.id)
        except Exception as exc:  # whatever went wrong is said, never swallowed into a negative
            LOG.exception("job %d failed", job.id)
            self._fail(job, f"internal error: {type(exc).__name__}: {exc}"[:500])
        return True

    # One job --------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        claimed_at = time.time()
        paths, facts = self._series(job)
        rule, why = self.routing.route(facts)
        if rule is None:
            self._not_eligible(job, why)
            return
        active = self._model(rule.model, "active")
        if active is None:
            self._fail(job, f"no active model for {rule.model} (routing rule {rule.name!r})")
            return
        try:
            inputs, origins, digest = prepare(active.model.manifest, paths)
            prepared_at = time.time()
            result = self._run(active, inputs, origins, digest, claimed_at)
            inferred_at = time.time()
            objects = self._build_outputs(job, active.model, result, paths)
        except ApplianceError as exc:  # InferenceError, DecodeError, PackageError: said as the reason
            self._fail(job, str(exc))
            return
        output_at = time.time()
        timings = {
            "queue_wait_s": round(claimed_at - job.created_at, 4),
            "decode_s": round(prepared_at - claimed_at, 4),
            "inference_s": round(inferred_at - prepared_at, 4),
            "output_s": round(output_at - inferred_at, 4),
        }
        self._record(job, active, result, timings, objects)
        shadow = self._model(rule.model, "shadow")
        if shadow is not None:
            self._run_shadow(job, shadow, inputs, origins, digest, result)

    def _series(self, job: Job) -> tuple[list[Path], SeriesFacts]:
        conn = self.db.conn
        rows = conn.execute("SELECT path FROM instances WHERE series_instance_uid = ? ORDER BY received_at",
                            (job.series_instance_uid,)).fetchall()
        calling_ae, modality, body_part, description = conn.execute(
            "SELECT calling_ae, modality, body_part, series_description FROM series "
            "WHERE series_instance_uid = ?", (job.series_instance_uid,)).fetchone()
        paths = [Path(row[0]) for row in rows]
        first = read_header(paths[0])
        image_type = tuple(str(v) for v in getattr(first, "ImageType", []) or [])
        facts = SeriesFacts(modality=modality, body_part=body_part, sop_class_uid=str(first.SOPClassUID),
                            series_description=description, image_type=image_type,
                            instances=len(paths), calling_ae=calling_ae)
        return paths, facts

    def _model(self, model_id: str, state: str) -> Loaded | None:
        models = [m for m in self.registry.in_state(state) if m.id == model_id]
        if not models:
            return None
        model = models[0]
        key = (model.id, model.version)
        if key not in self._loaded:
            self._loaded[key] = Loaded(model, self._runtime(model))
        return self._loaded[key]

    def _runtime(self, model: InstalledModel) -> backends.Runtime:
        """Load the variant chosen at activation on its target again (no new trials)."""
        backend, device, precision = model.selection["chosen"].split("/")
        variant = next(v for v in model.manifest.variants
                       if v.backend == backend and v.precision == precision)
        return backends.load(backends.Target(backend, device), [model.path / f for f in variant.files],
                             precision, variant.options,
                             (model.manifest.outputs.score, model.manifest.outputs.cam))

    def _run(self, loaded: Loaded, inputs: np.ndarray, origins: list[tuple[Path, int]], digest: str,
             started: float) -> SeriesResult:
        manifest = loaded.model.manifest
        deadline = time.monotonic() + self.settings.worker.series_timeout_s - (time.time() - started)
        scores, cams = infer(loaded.runtime, inputs, self.settings.worker.batch_size, deadline)
        series_score = min(max(manifest.aggregation.apply(scores), 0.0), 1.0)
        key = int(np.argmax(scores))
        threshold = manifest.operating_point.threshold
        return SeriesResult(series_score, series_score >= threshold, threshold, origins[key][0],
                            origins[key][1], cams[key], scores, digest)

    def _decision(self, model: InstalledModel, result: SeriesResult) -> report.TriageDecision:
        return report.TriageDecision(
            task=model.id, finding=model.manifest.finding[:64], finding_code=finding_code(model.manifest),
            flag=result.flag, score=result.score, threshold=result.threshold, model_id=model.id,
            model_version=model.version, model_sha256=model.package_sha256,
            decided_at=dt.datetime.now(dt.timezone.utc))

    def _build_outputs(self, job: Job, model: InstalledModel, result: SeriesResult,
                       paths: list[Path]) -> list[tuple[Path, pydicom.Dataset]]:
        """The SR and the secondary capture, written under the results folder."""
        decision = self._decision(model, result)
        uids = report.ResultUids.from_key(f"job-{job.id}-gen-{job.generation}")
        headers = [read_header(path) for path in paths]
        sr = report.build_sr(headers, decision, uids, device_uid=_device_uid())
        key = decode_instance(result.key_path)[result.key_frame]
        hu = key.pixels.astype(np.float32) * key.slope + key.intercept
        if model.manifest.input.windows:
            window = model.manifest.input.windows[0]
            center, width = window.center, window.width
        else:
            low, high = np.percentile(hu, [0.5, 99.5])
            center, width = float(low + high) / 2, float(max(high - low, 1.0))
        capture = report.build_heatmap_capture(key.dataset, hu, (center, width),
                                                heat_map(result.key_cam), decision, uids)
        folder = self.settings.results_dir / job.study_instance_uid
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for ds in (sr, capture):
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append((path, ds))
        return written

    # Recording ------------------------------------------------------------------------
    def _record(self, job: Job, loaded: Loaded, result: SeriesResult, timings: dict,
                objects: list[tuple[Path, pydicom.Dataset]]) -> None:
        model = loaded.model
        now = time.time()
        sr, capture = objects[0][1], objects[1][1]
        destinations = self.settings.dicom.destinations
        conn = self.db.conn
        with transaction(conn):
            if not complete(conn, job, self.name, "done", None, now):
                raise LeaseLost()
            current = conn.execute("SELECT generation FROM series WHERE series_instance_uid = ?",
                                   (job.series_instance_uid,)).fetchone()[0]
            superseded = current != job.generation
            seq = audit_log.append_in(conn, "inference", {
                "role": "active", "job_id": job.id, "study_instance_uid": job.study_instance_uid,
                "series_instance_uid": job.series_instance_uid, "generation": job.generation,
                "model_id": model.id, "model_version": model.version,
                "model_sha256": model.package_sha256, "backend": loaded.runtime.target.label,
                "precision": loaded.runtime.precision, "input_sha256": result.input_sha256,
                "images": int(len(result.image_scores)), "score": round(result.score, 6),
                "threshold": result.threshold, "flag": bool(result.flag), "latency": timings,
                "sr_instance_uid": str(sr.SOPInstanceUID), "sc_instance_uid": str(capture.SOPInstanceUID),
                "superseded": superseded,
            })
            conn.execute(
                "INSERT INTO inference_results (job_id, role, series_instance_uid, study_instance_uid, "
                "generation, model_id, model_version, score, threshold, flag, superseded, audit_seq, "
                "sr_instance_uid, sc_instance_uid, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.id, "active", job.series_instance_uid, job.study_instance_uid, job.generation,
                 model.id, model.version, result.score, result.threshold, int(result.flag),
                 int(superseded), seq, str(sr.SOPInstanceUID), str(capture.SOPInstanceUID), now))
            if not superseded:
                conn.execute(
                    "UPDATE series SET state = 'triaged', flag = ?, score = ?, model = ?, reason = NULL, "
                    "updated_at = ? WHERE series_instance_uid = ? AND generation = ?",
                    (int(result.flag), result.score, f"{model.id} {model.version}", now,
                     job.series_instance_uid, job.generation))
                for path, ds in objects:
                    enqueue_in(conn, path, str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                               job.study_instance_uid, destinations, now)
        self.on_recorded()
        LOG.info("series triaged: flag=%s score=%.3f model=%s %s (%s)", result.flag, result.score,
                 model.id, model.version, json.dumps(timings))

    def _run_shadow(self, job: Job, shadow: Loaded, inputs: np.ndarray, origins: list[tuple[Path, int]],
                    digest: str, active: SeriesResult) -> None:
        try:
            result = self._run(shadow, inputs, origins, digest, time.time())
        except InferenceError as exc:
            payload = {"error": str(exc)}
            result = None
        else:
            payload = {"score": round(result.score, 6), "threshold": result.threshold, "flag": bool(result.flag),
                       "agrees": bool(result.flag) == bool(active.flag),
                       "score_difference": round(result.score - active.score, 6)}
        model = shadow.model
        with transaction(self.db.conn) as conn:
            seq = audit_log.append_in(conn, "inference", {
                "role": "shadow", "job_id": job.id, "series_instance_uid": job.series_instance_uid,
                "study_instance_uid": job.study_instance_uid, "model_id": model.id,
                "model_version": model.version, "model_sha256": model.package_sha256,
                "backend": shadow.runtime.target.label, "precision": shadow.runtime.precision,
                "input_sha256": digest, **payload})
            if result is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO inference_results (job_id, role, series_instance_uid, "
                    "study_instance_uid, generation, model_id, model_version, score, threshold, flag, "
                    "audit_seq, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, "shadow", job.series_instance_uid, job.study_instance_uid, job.generation,
                     model.id, model.version, result.score, result.threshold, int(result.flag), seq,
                     time.time()))

    def _not_eligible(self, job: Job, reason: str) -> None:
        self._finish(job, "done", "not-eligible", reason)

    def _fail(self, job: Job, reason: str) -> None:
        self._finish(job, "failed", "failed", reason)

    def _finish(self, job: Job, job_state: str, series_state: str, reason: str) -> None:
        now = time.time()
        with transaction(self.db.conn) as conn:
            if not complete(conn, job, self.name, job_state, reason, now):
                return  # the lease went to another worker: it records the outcome
            conn.execute("UPDATE series SET state = ?, reason = ?, updated_at = ? WHERE series_instance_uid = ? "
                         "AND generation = ?", (series_state, reason, now, job.series_instance_uid, job.generation))
            audit_log.append_in(conn, f"series-{series_state}", {
                "job_id": job.id, "series_instance_uid": job.series_instance_uid, "reason": reason})
        LOG.info("series %s: %s", series_state, reason)


def _device_uid() -> str:
    return str(pydicom.uid.generate_uid(entropy_srcs=["triage appliance device", socket.gethostname()]))

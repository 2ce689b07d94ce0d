"""What a decision sends: the result objects of a triaged series, or the "not analysed"
notice of a series a routing rule claimed that got no result.

:mod:`appliance.report` builds the datasets (pure); this module says what they state,
derives their UIDs, writes them under the results folder and returns them as
:class:`~appliance.send.outbox.OutgoingObject`, ready for the outbox.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from appliance import formats, report
from appliance.errors import InferenceError
from appliance.jobs import Job
from appliance.outcome import results
from appliance.outcome.decision import Decision
from appliance.send.outbox import OutgoingObject

LOG = logging.getLogger(__name__)


class ObjectWriter:
    """Builds and writes a decision's objects, under ``results_dir/<study>/``, with UIDs
    derived from the install identity (see :class:`appliance.report.ResultUids`)."""

    def __init__(self, results_dir: Path, uid_root: str, install_id: str, uid_epoch: Callable[[], str] = lambda: ""):
        self.results_dir = results_dir
        self.uid_root = uid_root
        self.install_id = install_id
        self.uid_epoch = uid_epoch
        self.device_uid = report.device_uid(uid_root, install_id)

    def result_objects(self, conn: sqlite3.Connection, decision: Decision, now: float) -> list[OutgoingObject]:
        """The SR and the heat-map capture of a triaged series (the SR replaces the
        series' current SR of an earlier generation, if any).

        Raises
        ------
        InferenceError
            The model's finding has no code the SR can state.
        """
        run, key, claim = decision.run, decision.key, decision.claim
        if run is None or run.verdict is None or key is None or claim is None:
            raise ValueError("result objects need a triaged decision")
        model, verdict = run.model, run.verdict
        code = model.manifest.finding_code or report.finding_code(model.manifest.finding)
        if code is None:
            raise InferenceError(f"no coded finding for {model.manifest.finding!r}")
        content = report.ResultContent(  # in the appliance's spelling, whatever the package's
            task=model.id,
            finding=formats.finding(model.manifest.finding)[:64],
            finding_code=(code[0], code[1], formats.finding(code[2])),
            flag=verdict.flag,
            score=verdict.score,
            threshold=verdict.threshold,
            model_id=model.id,
            model_version=model.version,
            model_sha256=model.package_sha256,
            decided_at=_when(now),
            variant=run.variant[:64],
        )
        built = report.build_result_objects(
            decision.headers,
            key.dataset,
            key.pixels,
            key.windows,
            key.heat,
            content,
            self._uids(decision.job),
            device_uid=self.device_uid,
            key_frame=key.frame,
            predecessors=self._predecessors(conn, decision.job),
            procedure=claim.procedure,
        )
        written = report.write_objects(built, self.results_dir / decision.job.study_instance_uid)
        return [OutgoingObject.of(path, ds, alert=verdict.flag) for path, ds in written]

    def notice(self, decision: Decision, now: float) -> OutgoingObject | None:
        """The "not analysed" notice of a claimed series; None (logged) when it cannot be
        built (the series still ends with its reason; only the notice is missing)."""
        claim, code = decision.claim, decision.notice
        if claim is None or code is None:
            return None
        if not decision.headers:
            LOG.warning("job %d: no header of the series reads; it ends without a notice", decision.job.id)
            return None
        try:
            model = claim.model
            content = report.NoticeContent(
                task=claim.rule[:64],
                finding=model.manifest.finding[:64] if model else "",
                reason=decision.reason or "",
                reason_code=code,
                model_id=claim.model_id[:64],
                model_version=model.version if model else "",
                decided_at=_when(now),
            )
            built = report.build_notice(
                decision.headers,
                content,
                self._uids(decision.job),
                device_uid=self.device_uid,
                procedure=claim.procedure,
            )
            ((path, ds),) = report.write_objects([built], self.results_dir / decision.job.study_instance_uid)
        except Exception:
            LOG.exception("job %d: the not-analysed notice could not be built", decision.job.id)
            return None
        return OutgoingObject.of(path, ds)

    def _uids(self, job: Job) -> report.ResultUids:
        """The job's UIDs; after a restore (a UID epoch) the epoch joins the identity, so
        a generation the restored database replays gets UIDs PACS has never seen."""
        epoch = self.uid_epoch()
        identity = f"{self.install_id}/{epoch}" if epoch else self.install_id
        return report.ResultUids.derive(self.uid_root, identity, job.series_instance_uid, job.generation)

    def _predecessors(self, conn: sqlite3.Connection, job: Job) -> list[Dataset]:
        """The series' current SR from an earlier generation, which the new one replaces."""
        found = results.current_result_sr(conn, job.series_instance_uid, job.generation)
        if found is None:
            return []
        path = self.results_dir / found[0] / f"{found[1]}.dcm"
        try:
            return [dcmread(path)]
        except (OSError, ValueError, InvalidDicomError) as exc:
            LOG.warning("job %d: the SR it replaces cannot be read (%s); sent without predecessor", job.id, exc)
            return []


def _when(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)

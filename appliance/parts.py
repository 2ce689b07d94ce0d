"""The composition root: every part of the appliance, built from one settings object.

Each entry point (``appliance serve``, ``listener``, ``worker``, ``web``, ``sync`` and
the other commands) asks :class:`Parts` for what it runs, so each part is wired in one
place: the model registry always decodes golden series with the triage pipeline, the
worker always records through the outcome stage, and so on. Nothing here runs anything.

A database connection belongs to the thread (or component) that asked for it:
:meth:`Parts.database` opens a new one on every call, and every builder takes the
connection its part should use (a new one when none is given). Each builder imports what
it builds when asked, so a short command pays only for the parts it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

import sqlite_utils

from appliance import installation
from appliance.config import Settings
from appliance.db import open_database

if TYPE_CHECKING:
    from appliance.models.registry import ModelRegistry
    from appliance.outcome.recorder import Recorder
    from appliance.outcome.upkeep import Upkeep
    from appliance.receive.listener import Listener
    from appliance.send.sender import Sender
    from appliance.triage.decide import Triage
    from appliance.triage.routing import RoutingTable
    from appliance.triage.worker import Worker


class Parts:
    """Builds the appliance's parts for ``settings``."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def database(self) -> sqlite_utils.Database:
        """A new connection to the appliance's database (migrated on first open)."""
        return open_database(self.settings.db_path)

    @cached_property
    def routing(self) -> RoutingTable:
        from appliance.triage.routing import load_routing

        return load_routing(self.settings.worker.routing_file)

    @cached_property
    def install_id(self) -> str:
        """The install identity behind every result UID (created on first use)."""
        return installation.install_id(self.settings.data_dir)

    def registry(self, db: sqlite_utils.Database | None = None) -> ModelRegistry:
        """The installed models; qualification decodes golden DICOM series with the
        triage pipeline (injected: the models stage may not import triage)."""
        from appliance.models.registry import ModelRegistry
        from appliance.triage.pipeline import golden_series_inputs

        models = self.settings.models
        return ModelRegistry(
            db or self.database(),
            self.settings.models_dir,
            list(models.trusted_keys),
            models.pin_backend,
            golden_series_inputs,
        )

    def triage(self, db: sqlite_utils.Database | None = None) -> Triage:
        from appliance.triage.decide import Triage

        return Triage(self.registry(db), self.routing, self.settings.worker)

    def recorder(self, db: sqlite_utils.Database | None = None) -> Recorder:
        """The outcome stage, writing on ``db``."""
        from appliance.outcome.objects import ObjectWriter
        from appliance.outcome.recorder import Recorder

        db = db or self.database()
        conn = db.conn
        writer = ObjectWriter(
            self.settings.results_dir,
            self.settings.report.uid_root,
            self.install_id,
            lambda: installation.uid_epoch(conn),
        )
        return Recorder(db, writer, self.settings.dicom.destinations)

    def upkeep(self, db: sqlite_utils.Database | None = None) -> Upkeep:
        """The scheduled work the worker owns: study summaries, drift windows, retention, alerts."""
        from appliance.outcome.upkeep import Upkeep
        from appliance.send.alerts import Alerts

        worker, settings = self.settings.worker, self.settings
        dicom = settings.dicom
        alerts = Alerts(settings.alerts, dicom.ae_title, settings.data_dir, dicom.min_free_disk_bytes)
        db = db or self.database()
        return Upkeep(
            db, settings.drift, worker.summary_interval_s, worker.drift_interval_s, settings.retention, alerts
        )

    def worker(
        self,
        db: sqlite_utils.Database | None = None,
        name: str | None = None,
        on_sent: Callable[[], None] = lambda: None,
    ) -> Worker:
        """A worker whose triage, outcome stage, upkeep and queue share one connection."""
        from appliance.triage.worker import Worker

        db = db or self.database()
        triage, recorder, upkeep = self.triage(db), self.recorder(db), self.upkeep(db)
        return Worker(db, self.settings.worker, triage, recorder, name, on_sent, upkeep.run_due)

    def sender(self, db: sqlite_utils.Database | None = None) -> Sender:
        from appliance.send.sender import Sender

        return Sender(self.settings, db or self.database())

    def worker_and_sender(self) -> tuple[Worker, Sender]:
        """A worker and the sender it wakes when it queues objects, each on its own connection."""
        sender = self.sender()
        return self.worker(on_sent=sender.wake), sender

    def listener(self) -> Listener:
        """The DICOM listener, ranking completed series by the routing table's priority rules."""
        from appliance.receive.listener import Listener

        return Listener(self.settings, priority=self.routing.priority_of)

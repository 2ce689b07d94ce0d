"""``/metrics``: the pipeline's tables as Prometheus metrics, read at scrape time.

The drift monitor's gauges (statistic, threshold and exceeded per model version and
feature of the last closed window, and the active alert count) come from
:func:`appliance.drift.service.gauges`.

Counters and gauges are counted from the rows; the two histograms (inference latency and
time to result) are kept incrementally, reading only the audit and result rows added
since the previous scrape.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import sqlite_utils
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest

from appliance import __version__
from appliance.config import Settings
from appliance.disk import free_bytes
from appliance.drift.service import gauges
from appliance.states import ModelState, SeriesState

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
RESULT_BUCKETS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
#: Lends a database connection for the length of a ``with`` block.
Borrow = Callable[[], AbstractContextManager[sqlite_utils.Database]]


class _Histogram:
    """Cumulative buckets fed with new observations only."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.last_id = 0

    def observe(self, value: float) -> None:
        index = next((i for i, edge in enumerate(self.buckets) if value <= edge), len(self.buckets))
        self.counts[index] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for edge, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((edge, running))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.total)


class PipelineCollector:
    """A prometheus-client collector over the appliance database."""

    def __init__(self, borrow: Borrow):
        self.borrow = borrow
        self.lock = threading.Lock()
        self.inference = _Histogram(LATENCY_BUCKETS)
        self.to_result = _Histogram(RESULT_BUCKETS)

    def _advance(self, conn: sqlite3.Connection) -> None:
        for seq, payload in conn.execute(
            "SELECT seq, payload FROM audit_log WHERE kind = 'inference' AND seq > ? ORDER BY seq",
            (self.inference.last_id,),
        ):
            latency = json.loads(payload).get("latency") or {}
            if "inference_s" in latency:
                self.inference.observe(float(latency["inference_s"]))
            self.inference.last_id = seq
        for rid, seconds in conn.execute(
            "SELECT r.id, r.created_at - s.last_received_at FROM inference_results r JOIN series s "
            "ON s.series_instance_uid = r.series_instance_uid WHERE r.role = ? AND r.id > ? "
            "ORDER BY r.id",
            (ModelState.ACTIVE, self.to_result.last_id),
        ):
            self.to_result.observe(max(float(seconds), 0.0))
            self.to_result.last_id = rid

    def collect(self) -> Iterator:
        with self.borrow() as db:
            yield from self._families(db.conn)

    def _families(self, conn: sqlite3.Connection) -> Iterator:
        with self.lock:
            self._advance(conn)
            yield self.inference.family("appliance_inference_seconds", "Model inference time per series")
            yield self.to_result.family(
                "appliance_time_to_result_seconds", "From the last instance received to the result recorded"
            )
        received = CounterMetricFamily("appliance_instances_received", "DICOM instances stored")
        received.add_metric([], conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
        yield received
        series = GaugeMetricFamily("appliance_series", "Series by state", labels=["state"])
        for state, n in conn.execute("SELECT state, COUNT(*) FROM series GROUP BY state"):
            series.add_metric([state], n)
        yield series
        jobs = GaugeMetricFamily("appliance_jobs", "Jobs by state (queued is the queue depth)", labels=["state"])
        for state, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            jobs.add_metric([state], n)
        yield jobs
        flags = CounterMetricFamily("appliance_flags", "Series flagged by the active model", labels=["model"])
        for model_id, version, n in conn.execute(
            "SELECT model_id, model_version, COUNT(*) FROM inference_results WHERE role = ? AND flag = 1 "
            "GROUP BY model_id, model_version",
            (ModelState.ACTIVE,),
        ):
            flags.add_metric([f"{model_id} {version}"], n)
        yield flags
        failures = CounterMetricFamily("appliance_series_failed", "Series that ended failed")
        failed = conn.execute("SELECT COUNT(*) FROM series WHERE state = ?", (SeriesState.FAILED,)).fetchone()[0]
        failures.add_metric([], failed)
        yield failures
        outbox = GaugeMetricFamily(
            "appliance_outbox",
            "Result objects per destination and state (pending is the sender queue, dead the dead letters)",
            labels=["destination", "state"],
        )
        for destination, state, n in conn.execute(
            "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
        ):
            outbox.add_metric([destination, state], n)
        yield outbox


_DRIFT_HELP = {
    "triage_drift_statistic": "Drift statistic of the last closed window per model version and feature",
    "triage_drift_threshold": "Threshold the drift statistic is judged against",
    "triage_drift_exceeded": "1 when the last closed window exceeded its threshold",
    "triage_drift_active_alerts": "Drift alerts raised and not cleared",
}


class DriftCollector:
    """The drift monitor's gauges, grouped into one family per name."""

    def __init__(self, borrow: Borrow):
        self.borrow = borrow

    def collect(self) -> Iterator:
        families: dict[str, GaugeMetricFamily] = {}
        with self.borrow() as db:
            found = gauges(db.conn)
        for name, labels, value in found:
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, _DRIFT_HELP.get(name, name), labels=sorted(labels))
            family.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


class HostCollector:
    """The build, and the free space in the data folder against its floor."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self) -> Iterator:
        build = GaugeMetricFamily("appliance_build_info", "The running appliance's version", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        free = GaugeMetricFamily("appliance_disk_free_bytes", "Free space in the data folder")
        free.add_metric([], free_bytes(self.settings.data_dir))
        yield free
        floor = GaugeMetricFamily(
            "appliance_disk_floor_bytes", "Below this free space stores are refused (dicom.min_free_disk_mb)"
        )
        floor.add_metric([], self.settings.dicom.min_free_disk_bytes)
        yield floor


def registry_for(borrow: Borrow, settings: Settings) -> CollectorRegistry:
    """The collectors over the database (each borrowing a connection for one scrape) and the host."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(borrow))
    registry.register(DriftCollector(borrow))
    registry.register(HostCollector(settings))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

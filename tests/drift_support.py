"""A box's drift tables filled the way the worker fills them: simulated triaged series
recorded day by day through :func:`appliance.drift.service.record_series`, ending today,
with a scanner change near the end so the monitor raises real alerts."""

from __future__ import annotations

import time

import numpy as np

from appliance.config import DriftSettings
from appliance.db import open_database, transaction
from appliance.drift.service import record_series
from tests.unit.drift.drift_simulation import REFERENCE_STYLE, UNSEEN_STYLE, series_record

DAY = 86400.0


def record_days(db_path, settings: DriftSettings, model_version: str, days_ago: range, per_day: int,
                unseen_from: int | None = None, seed: int = 7, job0: int = 1, model_id: str = "head-ct",
                now: float | None = None) -> int:
    """Record ``per_day`` series on each day ``days_ago`` days before the day of ``now``
    (from its midnight UTC on), in the unseen scanner style from ``unseen_from`` days ago
    on, plus one not-analysed series per day; return the next free job id."""
    now = time.time() if now is None else now
    midnight = now - now % DAY
    rng = np.random.default_rng(seed)
    db = open_database(db_path)
    job = job0
    for ago in sorted(days_ago, reverse=True):
        start = midnight - ago * DAY
        style = UNSEEN_STYLE if unseen_from is not None and ago <= unseen_from else REFERENCE_STYLE
        for i in range(per_day):
            r = series_record(style, rng)
            with transaction(db.conn) as conn:
                record_series(conn, settings, job_id=job, model_id=model_id, model_version=model_version,
                              features=r["features"], score=r["score"], flag=r["flag"], now=start + i)
            job += 1
        with transaction(db.conn) as conn:
            record_series(conn, settings, job_id=job, model_id=model_id, model_version=model_version,
                          features=None, failure="decode failed: 1.2.3.dcm: truncated", now=start + per_day)
        job += 1
    db.close()
    return job

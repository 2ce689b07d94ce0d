"""The biomed and admin start page: the box's health (disk and whether it is encrypted at
rest, memory, load, queues, rates, readiness, flagged results PACS never got).

The other admin pages have their own modules (models, dicom, audit, accounts). Every
change they make goes through the functions the CLI uses and is audited by them.
"""

from __future__ import annotations

import os
import shutil

from fastapi import Request

from appliance import at_rest
from appliance.send.outbox import Outbox
from appliance.web import health_stats
from appliance.web.deps import Database, Now, SettingsDep
from appliance.web.routes.common import render, router
from appliance.web.routes.health import readiness

operations = router("operations")


def routers():
    return [operations]


def _memory() -> dict[str, int]:
    info = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return info


@operations.get("/admin")
def health_page(request: Request, db: Database, settings: SettingsDep, now: Now):
    conn = db.conn
    disk = shutil.disk_usage(settings.data_dir) if settings.data_dir.exists() else None
    jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    outbox = conn.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state").fetchall()
    return render(
        request,
        "admin_health.html",
        section="health",
        disk=disk,
        floor_bytes=settings.dicom.min_free_disk_bytes,
        at_rest=at_rest.inspect(settings.data_dir),
        load=os.getloadavg(),
        cpus=os.cpu_count(),
        memory=_memory(),
        jobs=jobs,
        oldest=health_stats.oldest_pending(conn, now),
        windows=health_stats.windows(conn, now),
        outbox=outbox,
        checks=readiness(conn, settings, now),
        now=now,
        result_alerts=Outbox(db).alerts(),
    )

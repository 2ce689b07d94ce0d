"""The drift page (biomed, admin): features, statistics, thresholds, alerts and the
monitor's pictures, from the same functions ``appliance drift status`` and
``appliance drift plot`` use.

Like ``appliance drift status``, the page only reads: the worker's upkeep closes the
windows that ended (each alert raised or cleared is audited there), and the page says
when it last did.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse

from appliance.drift import tables
from appliance.drift.service import day_of, drift_status
from appliance.outcome.upkeep import DRIFT_WINDOWS, last_ran
from appliance.web.deps import Connection, Now, SettingsDep
from appliance.web.drift_plots import current_plots, plot_file
from appliance.web.routes.common import render, router

operations = router("operations")
PLOT_KINDS = ("histogram", "categories", "statistic")


def routers():
    return [operations]


@operations.get("/admin/drift")
def drift_page(request: Request, conn: Connection, settings: SettingsDep, now: Now):
    today = day_of(now)
    status = drift_status(conn, settings.drift, today)
    key, files = current_plots(conn, settings.drift, settings.data_dir, now)
    available = set(files)
    for model in status["models"]:
        prefix = f"{model['model_id']}-{model['model_version']}"
        model["plots"] = {
            name: [
                f"/admin/drift/plots/{key}/{prefix}-{name}-{kind}.png"
                for kind in PLOT_KINDS
                if f"{prefix}-{name}-{kind}.png" in available
            ]
            for name in sorted(model["features"])
        }
        model["order"] = first_the_findings(model)
    return render(
        request,
        "admin_drift.html",
        section="drift",
        status=status,
        drift=settings.drift,
        history=tables.alerts(conn)[:20],
        today=today,
        now=now,
        windows_closed_at=last_ran(conn, DRIFT_WINDOWS),
    )


def first_the_findings(model: dict) -> list[str]:
    """The model's feature names, alerting ones first, then those beyond their threshold
    in the current window, then the rest, each group by name."""
    features, alerting = model["features"], set(model["alerting"])
    return sorted(features, key=lambda n: (n not in alerting, features[n].get("exceeded") is not True, n))


@operations.get("/admin/drift/plots/{key}/{name}")
def drift_plot(settings: SettingsDep, key: str, name: str):
    path = plot_file(settings.data_dir, key, name)
    if path is None:
        raise HTTPException(404, "no such drift picture (the page may have drawn newer ones: reload it)")
    return FileResponse(path, media_type="image/png")

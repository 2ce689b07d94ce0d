"""The drift page (biomed, admin): features, statistics, thresholds, alerts and the
monitor's pictures, from the same functions ``appliance drift status`` and
``appliance drift plot`` use.

Like ``appliance drift status``, opening the page first closes the windows that ended
before today (each alert raised or cleared is audited there), so it never shows a
judgement older than yesterday's window.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse

from appliance.db import transaction
from appliance.drift import store
from appliance.drift.service import day_of, drift_status, evaluate_due
from appliance.web.drift_plots import current_plots, plot_file
from appliance.web.routes.common import db, render, router

operations = router("operations")
PLOT_KINDS = ("histogram", "categories", "statistic")


def routers():
    return [operations]


@operations.get("/admin/drift")
def drift_page(request: Request):
    settings = request.app.state.settings
    conn = db(request)
    now = request.app.state.clock()
    today = day_of(now)
    with transaction(conn):
        evaluate_due(conn, settings.drift, today)
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
    return render(
        request,
        "admin_drift.html",
        section="drift",
        status=status,
        drift=settings.drift,
        history=store.alerts(conn)[:20],
        today=today,
    )


@operations.get("/admin/drift/plots/{key}/{name}")
def drift_plot(request: Request, key: str, name: str):
    path = plot_file(request.app.state.settings.data_dir, key, name)
    if path is None:
        raise HTTPException(404, "no such drift picture (the page may have drawn newer ones: reload it)")
    return FileResponse(path, media_type="image/png")

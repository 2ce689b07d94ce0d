"""``drift status|report|plot``: the drift monitor, as the worker's upkeep left it (reads only)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from appliance.formats import duration, statistic
from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    drift = sub.add_parser("drift", help="drift monitoring").add_subparsers(dest="action", required=True)
    status = drift.add_parser("status", help="features, statistics, thresholds and alerts per model version")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=show_status)
    report = drift.add_parser("report", help="the anonymised report of one day, as JSON")
    report.add_argument("--day", type=_day, required=True, help="YYYY-MM-DD (UTC)")
    report.set_defaults(func=show_report)
    plot = drift.add_parser("plot", help="write PNGs: reference vs current, statistic over time")
    plot.add_argument("--out", required=True, help="folder for the PNGs")
    plot.set_defaults(func=write_plots)


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day YYYY-MM-DD") from None


def show_status(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.drift.service import day_of, drift_status
    from appliance.outcome.upkeep import DRIFT_WINDOWS, last_ran

    conn, now = parts.database().conn, time.time()
    status = {
        **drift_status(conn, parts.settings.drift, day_of(now)),
        "windows_closed_at": last_ran(conn, DRIFT_WINDOWS),
    }
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    closed_at = status["windows_closed_at"]
    print(
        "windows closed by the worker "
        + (f"{duration(now - closed_at)} ago" if closed_at is not None else "never yet (is the worker running?)")
    )
    for m in status["models"]:
        w = m["window"]
        judged = "judged" if w["judged"] else f"not judged yet: {w['series']} of {w['min_series']} series"
        print(
            f"{m['model_id']} {m['model_version']}: {w['series']} series in the {w['days']}-day window "
            f"ending {w['end']}, {w['flagged']} flagged, not analysed {w['not_analysed'] or 0}; {judged}"
        )
        for name, f in sorted(m["features"].items()):
            if "statistic" in f:
                value, threshold = statistic(f["value"]), statistic(f["threshold"])
                stat = f"{f['statistic']} {value} (threshold {threshold}, {_source(f)})"
                stat += {True: "  EXCEEDS", False: "", None: "  not judged yet"}[f["exceeded"]]
            else:
                stat = "no reference yet"
            print(f"  {name:<20} {stat}")
        print(f"  alerting: {', '.join(m['alerting']) or 'none'}")
    if not status["models"]:
        print("no series recorded yet")
    return 0


def _source(feature: dict) -> str:
    """Where a threshold came from, and how much it was widened for a small window."""
    details = feature.get("details", {})
    if "widened" not in details:
        return feature["threshold_source"]
    basis = "set for" if feature["threshold_source"] == "config" else "calibrated on"
    widened, series = details["widened"], details["calibrated_series"]
    said = f"{feature['threshold_source']}, widened x{widened:.2f}: {basis} {series:.0f} series"
    if details.get("unreachable"):
        said += "; a distance is at most 1, so it cannot alert in a window this small"
    return said


def show_report(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.drift.anonymised import daily_report
    from appliance.sync.report_queue import previous_field

    conn = parts.database().conn
    report = daily_report(
        conn, parts.settings.drift, args.day, previous=lambda m, v: previous_field(conn, m, v, day=args.day)
    )
    print(json.dumps(report, indent=2))
    return 0


def write_plots(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.drift.plot import write_plots
    from appliance.drift.service import day_of

    paths = write_plots(parts.database().conn, parts.settings.drift, Path(args.out), day_of(time.time()))
    for path in paths:
        print(path)
    if not paths:
        print("no plots written: no triaged series has drift features yet")
    return 0

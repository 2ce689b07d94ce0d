"""Drift for tests: a simulated site (days of series from a scanner style, fed as day
aggregates straight into :func:`appliance.drift.monitor.step`: no DICOM, no database),
and a box's drift tables filled the way the worker fills them (:func:`record_days`).

``python -m tests.helpers.drift OUT_DIR`` runs the 20-seed experiment of docs/drift.md
and writes its figure.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.config import DriftSettings
from appliance.db import open_database, transaction
from appliance.drift.aggregate import aggregate
from appliance.drift.features import intensity_counts, series_features
from appliance.drift.histograms import merge
from appliance.drift.monitor import MonitorState, step
from appliance.drift.service import day_of, evaluate_due, record_series
from training.drift import reference_thresholds

REFERENCE_FEATURES = ("hu", "slice_count", "slice_thickness_mm", "pixel_spacing_mm", "matrix_size")


@dataclass(frozen=True)
class Style:
    """How a scanner and protocol make a head CT series."""

    manufacturer: str
    model: str
    kernel: str
    thickness_mm: tuple[float, ...]
    slices: tuple[int, int]
    noise_hu: float
    score_beta: tuple[float, float]


REFERENCE_STYLE = Style("ACME", "Scan 64", "FC23", (5.0, 5.0, 5.0, 2.5), (28, 40), 6.0, (1.0, 8.0))
UNSEEN_STYLE = Style("Other Vendor", "X1", "B70f", (1.0,), (140, 180), 25.0, (1.5, 6.0))


def series_record(style: Style, rng: np.random.Generator) -> dict:
    """Features, score and flag of one simulated triaged series."""
    n = 3000
    air = int(n * rng.uniform(0.3, 0.5))
    bone = int(n * rng.uniform(0.05, 0.1))
    brain = rng.normal(35 + rng.normal(0, 3), style.noise_hu, n - air - bone)
    hu = np.concatenate([rng.normal(-1000, 5, air), brain, rng.normal(800, 200, bone)])
    header = {"Rows": 512, "Columns": 512, "PixelSpacing": [rng.uniform(0.4, 0.5)] * 2,
              "SliceThickness": float(rng.choice(style.thickness_mm)), "KVP": 120,
              "ConvolutionKernel": style.kernel, "Manufacturer": style.manufacturer,
              "ManufacturerModelName": style.model, "BodyPartExamined": "HEAD"}
    slices = int(rng.integers(*style.slices))
    features = series_features("ct_slice", header, [intensity_counts("ct_slice", hu)], slices)
    score = float(rng.beta(*style.score_beta))
    return {"outcome": "triaged", "features": features, "score": score, "flag": score >= 0.5}


def package_reference(rng: np.random.Generator, series: int = 400) -> dict:
    """What a package built on the reference style ships: histograms and thresholds."""
    sets = []
    for _ in range(series):
        h = series_record(REFERENCE_STYLE, rng)["features"]["histograms"]
        sets.append({name: {"edges": [], "counts": h[name]} for name in REFERENCE_FEATURES})
    return {"feature_set": "ct_slice", "histograms": merge(sets),
            "thresholds": reference_thresholds(sets, seed=int(rng.integers(1 << 31)))}


def run_site(seed: int, stable_days: int = 60, changed_days: int = 30, per_day: int = 30,
             settings: DriftSettings | None = None) -> dict:
    """One simulated site; returns alert days, per-day evaluations and the change day."""
    settings = settings or DriftSettings()
    rng = np.random.default_rng(seed)
    reference = package_reference(rng)
    state = MonitorState()
    days, alerts, history = [], [], []
    for day in range(stable_days + changed_days):
        style = REFERENCE_STYLE if day < stable_days else UNSEEN_STYLE
        days.append(aggregate(series_record(style, rng) for _ in range(rng.poisson(per_day))))
        if len(days) < settings.window_days:
            continue
        window = days[-settings.window_days]
        for d in days[-settings.window_days + 1:]:
            window = window.add(d)
        evaluations, events = step(state, window, reference, settings)
        history.append((day, evaluations))
        alerts += [(day, e.evaluation.feature) for e in events if e.kind == "drift-alert"]
    return {"change_day": stable_days, "alerts": alerts, "history": history}


def experiment(seeds: range = range(20)) -> dict:
    """False alerts over the stable days and detection delay after the change, per seed."""
    false_alerts, delays, sites = [], [], []
    for seed in seeds:
        site = run_site(seed)
        change = site["change_day"]
        false_alerts.append(sum(1 for day, _ in site["alerts"] if day < change))
        after = [day - change for day, _ in site["alerts"] if day >= change]
        delays.append(min(after) if after else None)
        sites.append(site)
    return {"false_alerts": false_alerts, "delays": delays, "sites": sites}


def plot(site: dict, out: Path) -> None:
    """Statistic over time with its threshold, for a few features of one site."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for feature, ax in (("hu", axes[0]), ("kernel", axes[1])):
        pts = [(day, e) for day, evs in site["history"] for e in evs if e.feature == feature]
        x = [d + 1 for d, _ in pts]
        if feature == "kernel":
            ax.semilogy(x, [max(e.value, 1e-300) for _, e in pts], label="chi-square p (vs baseline)")
            ax.semilogy(x, [e.threshold for _, e in pts], "r--", label="corrected level")
        else:
            ax.plot(x, [e.value for _, e in pts], label="Jensen-Shannon distance (vs package)")
            ax.plot(x, [e.threshold for _, e in pts], "r--", label="threshold (mean + z sigma)")
        ax.axvline(site["change_day"] + 1, color="grey", linestyle=":", label="style change")
        for day, f in site["alerts"]:
            ax.axvline(day + 1, color="orange", alpha=0.5)
        ax.set_title(f"feature {feature}")
        ax.legend(fontsize=7)
    axes[1].set_xlabel("day (7-day window ending that day)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- a box's drift tables ---------------------------------------------------------------
DAY = 86400.0


def record_days(db_path, settings: DriftSettings, model_version: str, days_ago: range, per_day: int,
                unseen_from: int | None = None, seed: int = 7, job0: int = 1, model_id: str = "head-ct",
                now: float | None = None) -> int:
    """Record ``per_day`` series on each day ``days_ago`` days before the day of ``now``
    (from its midnight UTC on), in the unseen scanner style from ``unseen_from`` days ago
    on, plus one not-analysed series per day, then close the windows that ended as the
    worker's upkeep would; return the next free job id."""
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
                record_series(conn, job_id=job, model_id=model_id, model_version=model_version,
                              features=r["features"], score=r["score"], flag=r["flag"], now=start + i)
            job += 1
        with transaction(db.conn) as conn:
            record_series(conn, job_id=job, model_id=model_id, model_version=model_version,
                          features=None, failure="decode failed: 1.2.3.dcm: truncated", now=start + per_day)
        job += 1
    with transaction(db.conn) as conn:  # the worker's scheduled upkeep closes the windows that ended
        evaluate_due(conn, settings, day_of(now))
    db.close()
    return job


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = experiment()
    print("false alerts per seed over 60 stable days:", result["false_alerts"])
    print("days from change to alert per seed:", result["delays"])
    plot(result["sites"][0], out_dir / "drift-simulation.png")

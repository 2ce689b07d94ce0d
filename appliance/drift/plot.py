"""Pictures for people (``appliance drift plot``; the admin page shows the same files).

Per model version and feature: the reference (the package's, or the baseline window for
features the package lacks) against the current window, on an axis fitted to the bins
either fills, and the window statistic over time with its threshold. The model and version
are in the file name and on the page, not in the title, so titles fit.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from appliance.config import DriftSettings
from appliance.drift import tables
from appliance.drift.features import feature_edges
from appliance.drift.service import load_reference, window_aggregate


def write_plots(conn: sqlite3.Connection, settings: DriftSettings, out_dir: Path, today: dt.date) -> list[Path]:
    """Write the PNGs under ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for model_id, version, _ in tables.model_versions(conn):
        prefix = f"{model_id}-{version}"
        _, state = tables.load_monitor(conn, model_id, version)
        window = window_aggregate(conn, model_id, version, today, settings.window_days)
        reference = (load_reference(conn, model_id, version) or {}).get("histograms", {})
        edges = feature_edges(window.kind) if window.kind else {}
        for name, counts in window.histograms.items():
            if name in reference and len(reference[name]["counts"]) == len(counts):
                ref, label = np.asarray(reference[name]["counts"], float), "package reference"
            elif state.baseline is not None and name in state.baseline.histograms:
                ref, label = state.baseline.histograms[name].astype(float), "baseline window"
            else:
                ref, label = None, ""
            fig, ax = plt.subplots(figsize=(7, 3.5))
            e = edges[name]
            shown = [c for c in (ref, counts.astype(float)) if c is not None and c.sum() > 0]
            for c, text, style in ((ref, label, "C0"), (counts.astype(float), "current window", "C1")):
                if c is not None and c.sum() > 0:
                    ax.stairs(c / c.sum(), e, label=text, color=style)
            if shown:
                ax.set_xlim(*occupied_range(e, *shown))
            ax.set_title(f"{name}: window ending {today}, {window.series} series", fontsize=10)
            ax.set_ylabel("proportion")
            ax.legend(fontsize=8)
            written.append(_save(fig, out_dir / f"{prefix}-{name}-histogram.png"))
        base = state.baseline.monitored_categories() if state.baseline else {}
        for name, tally in window.monitored_categories().items():
            labels = sorted(set(tally) | set(base.get(name, {})))
            if not labels:
                continue
            x = np.arange(len(labels))
            fig, ax = plt.subplots(figsize=(7, 3.5))
            for offset, source, text in ((-0.2, base.get(name), "baseline window"), (0.2, tally, "current window")):
                if source:
                    v = np.array([source.get(k, 0) for k in labels], dtype=np.float64)
                    ax.bar(x + offset, v / max(v.sum(), 1), width=0.4, label=text)
            ax.set_xticks(x, labels, rotation=20, fontsize=7)
            ax.set_title(f"{name}: window ending {today}", fontsize=10)
            ax.legend(fontsize=8)
            written.append(_save(fig, out_dir / f"{prefix}-{name}-categories.png"))
        history = tables.evaluations(conn, model_id, version)
        for name in sorted({h["feature"] for h in history}):
            rows = [h for h in history if h["feature"] == name]
            days = mdates.date2num([dt.date.fromisoformat(h["day"]) for h in rows])
            fig, ax = plt.subplots(figsize=(7, 3.5))
            values = [max(h["value"], 1e-300) for h in rows]
            plot = ax.semilogy if rows[0]["statistic"] == "chi_square_p" else ax.plot
            plot(days, values, marker=".", label=rows[0]["statistic"])
            plot(days, [h["threshold"] for h in rows], "r--", label="threshold")
            for h, d in zip(rows, days, strict=True):
                if h["exceeded"]:
                    ax.axvline(d, color="orange", alpha=0.3)
            ax.set_title(f"{name}: statistic per {settings.window_days}-day window", fontsize=10)
            ax.legend(fontsize=8)
            ax.xaxis_date()
            fig.autofmt_xdate()
            written.append(_save(fig, out_dir / f"{prefix}-{name}-statistic.png"))
    return written


def occupied_range(edges: np.ndarray, *counts: np.ndarray) -> tuple[float, float]:
    """The x range from the first to the last bin any of ``counts`` fills, with a bin's
    margin each side, so a histogram fills its picture instead of a sliver of 0-65000."""
    filled = np.flatnonzero(np.any([np.asarray(c) > 0 for c in counts], axis=0))
    if filled.size == 0:
        return float(edges[0]), float(edges[-1])
    lo, hi = max(int(filled[0]) - 1, 0), min(int(filled[-1]) + 2, len(edges) - 1)
    return float(edges[lo]), float(edges[hi])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

"""The drift pictures of the admin page: ``appliance drift plot``'s PNGs, written under
the data dir once per state of the drift tables and served from there.

A folder is named by a fingerprint of the hour, the closed windows and the alerts, so the
pictures are redrawn at most once an hour while series arrive (drawing them all takes
seconds) and at once when a window closes or an alert changes; a page finding its folder
reuses it, a page
finding none writes a new one (into a temporary name first, so a half-written folder is
never served) and removes the older ones. matplotlib's pyplot is not thread-safe, so one
lock covers the writing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import threading
from pathlib import Path

from appliance.config import DriftSettings
from appliance.drift.service import day_of

#: A picture's file name as :func:`appliance.drift.plot.write_plots` makes it.
PLOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,200}\.png$")
KEY = re.compile(r"^[0-9a-f]{16}$")
_LOCK = threading.Lock()


def plots_root(data_dir: Path) -> Path:
    return data_dir / "drift-plots"


def fingerprint(conn: sqlite3.Connection, settings: DriftSettings, now: float) -> str:
    """16 hex digits naming the pictures of this hour and these judgements (read only)."""
    parts = [str(int(now // 3600)), str(settings.window_days)]
    for sql in (
        "SELECT COUNT(*) > 0 FROM drift_series",
        "SELECT COUNT(*), MAX(day) FROM drift_evaluations",
        "SELECT COUNT(*), MAX(id), COUNT(cleared_day) FROM drift_alerts",
    ):
        parts.append(repr(conn.execute(sql).fetchone()))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def current_plots(
    conn: sqlite3.Connection, settings: DriftSettings, data_dir: Path, now: float
) -> tuple[str, list[str]]:
    """(folder key, PNG file names) of the pictures of the drift tables, drawn this hour."""
    from appliance.drift.plot import write_plots  # matplotlib only when the page is asked for

    root = plots_root(data_dir)
    key = fingerprint(conn, settings, now)
    folder = root / key
    with _LOCK:
        if not folder.is_dir():
            temporary = root / f".{key}.partial"
            shutil.rmtree(temporary, ignore_errors=True)
            write_plots(conn, settings, temporary, day_of(now))
            temporary.rename(folder)
            for old in root.iterdir():
                if old.name != key and KEY.match(old.name):
                    shutil.rmtree(old, ignore_errors=True)
    return key, sorted(p.name for p in folder.glob("*.png"))


def plot_file(data_dir: Path, key: str, name: str) -> Path | None:
    """The PNG a page links to, or None when the key or name is not one of ours."""
    if not KEY.match(key) or not PLOT_NAME.match(name):
        return None
    path = plots_root(data_dir) / key / name
    return path if path.is_file() else None

"""Issue 26: a drift picture's title was cut off at the figure's edge. Every picture
``appliance drift plot`` writes (and the drift page shows) has its title inside the figure,
measured with matplotlib's renderer after the layout the files are saved with."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.config import DriftSettings
from appliance.db import open_database
from appliance.drift import plot
from tests.helpers.drift import record_days

NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def titles(tmp_path, monkeypatch) -> dict[str, tuple[str, float, float, float, float]]:
    """file name -> (title, its left and right edge, the figure's left and right edge), in pixels."""
    settings = DriftSettings(min_series=60)  # 12 a day: a week's window of 84 is judged
    record_days(tmp_path / "a.db", settings, "1.0.0", range(0, 18), per_day=12, unseen_from=5, now=NOW,
                model_id="head-ct-ich-demo")
    measured = {}
    save = plot._save

    def measure_then_save(fig, path):
        fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            extent = ax.title.get_window_extent(renderer)
            measured[path.name] = (ax.title.get_text(), extent.x0, extent.x1, fig.bbox.x0, fig.bbox.x1)
        return save(fig, path)

    monkeypatch.setattr(plot, "_save", measure_then_save)
    db = open_database(tmp_path / "a.db")
    written = plot.write_plots(db.conn, settings, tmp_path / "plots", dt.date(2026, 3, 20))
    assert sorted(p.name for p in written) == sorted(measured)
    return measured


def test_every_picture_has_its_whole_title_inside_the_figure(titles):
    kinds = {name.rsplit("-", 1)[1] for name in titles}
    assert kinds == {"histogram.png", "categories.png", "statistic.png"}
    cut = {name: t for name, t in titles.items() if not (t[3] <= t[1] and t[2] <= t[4])}
    assert not cut, f"titles past the figure's edge: {cut}"


def test_a_title_names_the_feature_and_the_window_not_the_model(titles):
    text = titles["head-ct-ich-demo-1.0.0-hu-histogram.png"][0]
    assert text.startswith("hu: window ending 2026-03-20, ") and text.endswith(" series")
    assert all("head-ct" not in t[0] for t in titles.values())

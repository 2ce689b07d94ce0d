"""The drift monitor on the web (issue 11 -> issue 10): ``/metrics`` carries the drift
gauges per model version and feature and the alert count; the biomed drift page shows the
features, statistics, thresholds, alerts and the monitor's pictures (served from the data
dir, same origin), and nobody else may see them."""

from __future__ import annotations

import contextlib
import math
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.config import load_settings
from appliance.db import open_database
from appliance.drift import tables
from appliance.models.registry import ModelRegistry
from appliance.web import accounts
from appliance.formats import count
from scripts.harness import free_port
from tests.helpers.boxes import PASSWORD, SCREENSHOTS, Box, screenshot, sign_in, start_server
from tests.helpers.drift import record_days


@pytest.fixture(scope="module")
def drift_box(tmp_path_factory):
    """Twelve series a day for 18 days ending today, the scanner changing 5 days ago (the
    monitor raises real alerts); a biomed user, a radiologist, a metrics token; a server."""
    root = tmp_path_factory.mktemp("drift-web")
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(root / "data"), "APPLIANCE_DRIFT_MIN_SERIES": "40",
                                      "APPLIANCE_DICOM_PORT": str(free_port()),
                                      "APPLIANCE_WEB_PORT": str(free_port())})
    record_days(settings.db_path, settings.drift, "1.0.0", range(0, 18), per_day=12, unseen_from=5)
    db = open_database(settings.db_path)
    for name, role in (("bio", "biomed"), ("rad", "radiologist")):
        accounts.add_user(db.conn, name, role, PASSWORD, "test")
    token = accounts.create_token(db.conn, "biomed", "prometheus", "test")
    server, thread, url = start_server(settings)
    box = Box(settings, url)
    box.token = token
    yield box
    server.should_exit = True
    thread.join(timeout=30)


def test_metrics_carry_the_drift_gauges_and_the_alert_count(drift_box):
    answer = httpx.get(f"{drift_box.url}/metrics", headers={"Authorization": f"Bearer {drift_box.token}"},
                       timeout=60)
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    conn = open_database(drift_box.settings.db_path).conn
    last_day = max(e["day"] for e in tables.evaluations(conn, "head-ct", "1.0.0"))
    expected = {e["feature"]: e for e in tables.evaluations(conn, "head-ct", "1.0.0") if e["day"] == last_day}
    assert len(expected) >= 10
    for metric, column in (("triage_drift_statistic", "value"), ("triage_drift_threshold", "threshold"),
                           ("triage_drift_exceeded", "exceeded")):
        shown = {s.labels["feature"]: s for s in families[metric].samples}
        assert set(shown) == set(expected), metric
        for feature, sample in shown.items():
            assert sample.labels["model"] == "head-ct" and sample.labels["version"] == "1.0.0"
            assert sample.labels["statistic"] == expected[feature]["statistic"]
            assert sample.value == pytest.approx(float(expected[feature][column]))
    active = tables.alerts(conn, active_only=True)
    assert {a["feature"] for a in active} >= {"kernel", "manufacturer_model"}
    [count] = families["triage_drift_active_alerts"].samples
    assert count.value == len(active)


def test_a_radiologist_may_not_see_drift(drift_box, page):
    sign_in(page, drift_box, "rad")
    assert page.goto(f"{drift_box.url}/admin/drift").status == 403
    anonymous = httpx.get(f"{drift_box.url}/admin/drift", follow_redirects=False, timeout=60)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"


def test_biomed_sees_features_thresholds_alerts_and_pictures(drift_box, page):
    sign_in(page, drift_box, "bio")
    page.get_by_role("link", name="Drift").click()
    page.wait_for_load_state()
    assert page.url.endswith("/admin/drift")
    csp = page.request.get(f"{drift_box.url}/admin/drift").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "img-src 'self'" in csp
    conn = open_database(drift_box.settings.db_path).conn
    active = tables.alerts(conn, active_only=True)
    assert f"{count(len(active), 'drift alert')} active" in page.locator(".page-head").inner_text()

    alerts = page.locator("table.drift-alerts tbody tr")
    assert alerts.count() == len(tables.alerts(conn))
    kernel = page.locator("table.drift-alerts tr", has=page.locator("td:text-is('kernel')")).first.inner_text()
    assert "alerting" in kernel and "head-ct 1.0.0" in kernel and "chi_square_p" in kernel

    features = page.locator("table.drift-features")
    row = features.locator("tr", has=page.get_by_role("link", name="kernel", exact=True)).inner_text()
    assert "chi_square_p" in row and "beyond threshold" in row and "alerting" in row and "baseline" in row
    hu = features.locator("tr", has=page.get_by_role("link", name="hu", exact=True)).inner_text()
    assert "js_distance" in hu and "config" in hu  # no package reference installed: the configured fallback
    assert "0.1" in hu
    screenshot(page, "admin-drift")

    names = [n.split()[0] for n in features.locator("tbody th").all_inner_texts()]
    alerting = {a["feature"] for a in active}
    assert set(names[:len(alerting)]) == alerting  # the alerting features first (issue 26)
    pictures = [h.split()[0] for h in page.locator(".drift-plots h4").all_inner_texts()]
    assert set(pictures[:len(alerting)]) == alerting

    images = page.locator(".drift-plots img")
    assert images.count() >= 20
    sources = [images.nth(i).get_attribute("src") for i in range(images.count())]
    assert all(s.startswith("/admin/drift/plots/") for s in sources)
    # Every picture loads where it stands, none left blank until scrolled to (issue 26: lazy loading).
    assert [images.nth(i).get_attribute("loading") for i in range(images.count())] == [None] * images.count()
    page.wait_for_function("[...document.querySelectorAll('.drift-plots img')]"
                           ".every(i => i.complete && i.naturalWidth > 100)", timeout=60_000)
    key = sources[0].split("/")[4]
    on_disk = sorted(p.name for p in (drift_box.settings.data_dir / "drift-plots" / key).glob("*.png"))
    assert sorted(s.rsplit("/", 1)[1] for s in sources) == on_disk
    page.locator("#plots-head-ct-1\\.0\\.0-kernel").scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-drift-pictures.png"))

    # A name outside the folder is not served.
    assert page.request.get(f"{drift_box.url}/admin/drift/plots/{key}/..%2Fappliance.db").status == 404
    assert page.request.get(f"{drift_box.url}/admin/drift/plots/{key}/nothing.png").status == 404


@contextlib.contextmanager
def drift_page_of(page, settings):
    """A server for ``settings`` with a biomed user signed in on ``page``, at the drift page;
    the section of its one model."""
    accounts.add_user(open_database(settings.db_path).conn, "bio", "biomed", PASSWORD, "test")
    server, thread, url = start_server(settings)
    try:
        sign_in(page, Box(settings, url), "bio")
        page.goto(f"{url}/admin/drift")
        yield page.locator("section.drift-model")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_thin_window_is_not_judged_and_shows_no_finding(page, tmp_path):
    """Issue 26: two series from an unseen scanner after a judged history: the statistics
    are shown, but nothing is coloured as a finding; the page says how far the window is."""
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path / "data"), "APPLIANCE_DRIFT_MIN_SERIES": "40",
                                      "APPLIANCE_WEB_PORT": str(free_port())})
    job = record_days(settings.db_path, settings.drift, "1.0.0", range(8, 16), per_day=12)
    record_days(settings.db_path, settings.drift, "1.0.0", range(0, 1), per_day=2, unseen_from=0, job0=job)
    with drift_page_of(page, settings) as model:
        assert "Not judged yet: 2 of 40 series." in model.locator("p").first.inner_text()
        features = model.locator("table.drift-features tbody tr")
        hu = model.locator("tr", has=page.get_by_role("link", name="hu", exact=True)).inner_text()
        assert "js_distance" in hu and "not judged yet: 2 of 40 series" in hu
        assert features.count() >= 10
        assert model.locator(".bad").count() == 0, "a thin window colours nothing as a finding"
        assert "beyond threshold" not in model.inner_text()
        screenshot(page, "admin-drift-thin-window")


def test_a_window_smaller_than_the_calibration_is_judged_on_widened_package_thresholds(page, tmp_path, demo_packages):
    """Issue 26: with ``min_series`` under the package's calibrated window, the package
    thresholds are widened by the square root of the ratio, and the From column says so."""
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path / "data"), "APPLIANCE_DRIFT_MIN_SERIES": "40",
                                      "APPLIANCE_MODELS_TRUSTED_KEYS": str(demo_packages["public_key"]),
                                      "APPLIANCE_WEB_PORT": str(free_port())})
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [demo_packages["public_key"]])
    model = registry.install(demo_packages["head-ct"][0], "test")
    registry.activate(model.id, model.version, "test")
    record_days(settings.db_path, settings.drift, model.version, range(0, 9), per_day=12, model_id=model.id)
    with drift_page_of(page, settings) as section:
        assert "enough series to judge" in section.locator("p").first.inner_text()
        hu = section.locator("tr", has=page.get_by_role("link", name="hu", exact=True)).locator("td").all_inner_texts()
        said = re.fullmatch(r"package, widened ×(\d\.\d\d) for (\d+) series \(calibrated on (\d+)\)", hu[4])
        assert said, hu
        factor, series, calibrated = float(said[1]), int(said[2]), int(said[3])
        assert 40 <= series < calibrated and factor == round(math.sqrt(calibrated / series), 2)

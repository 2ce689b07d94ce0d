"""The biomed and admin pages in Chromium: a model's whole life, audit, users and tokens."""

from __future__ import annotations

import datetime as dt
import re
import shutil

import pytest

from appliance.config import load_settings
from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.web import accounts
from scripts.harness import free_port
from tests.helpers.boxes import PASSWORD, Box, screenshot, sign_in, start_server
from tests.helpers.packages import rebuilt
from training.__main__ import main as training_cli

SLOW = 300_000  # golden tests on every backend run inside these requests


def _change(page, box, link_text: str) -> str:
    page.get_by_role("link", name=link_text).first.click()
    page.wait_for_load_state()
    page.check("input[name=confirm]")
    page.click("form.stack button[type=submit]", timeout=SLOW)
    page.wait_for_url("**/admin/models?ok=*", timeout=SLOW)
    return page.locator(".message.ok").inner_text()


def test_biomed_uploads_shadows_activates_and_rolls_back_a_model(box, page, quick_packages, tmp_path):
    package = rebuilt(quick_packages["head-ct"], quick_packages["private_key"], tmp_path, "1.2.0")
    sign_in(page, box, "bio")
    assert page.url.endswith("/admin")
    assert page.locator("h1").inner_text() == "Health"
    disk = shutil.disk_usage(box.settings.data_dir)  # the bar is the share not free: it and "GiB free" add up
    meter = page.locator("#disk-taken")
    shown = float(meter.get_attribute("value")) / float(meter.get_attribute("max"))
    assert abs(shown - (1 - disk.free / disk.total)) < 0.01
    taken = round(100 * (1 - disk.free / disk.total))
    assert abs(int(page.locator("#disk-shares").inner_text().split(" %")[0]) - taken) <= 1
    at_rest = page.locator("#at-rest")  # a scratch folder on a plain disk (issue 23)
    assert at_rest.locator(".bad").inner_text() == "✕ Not encrypted at rest"
    assert "running only because allow_unencrypted = true" in at_rest.inner_text()
    screenshot(page, "admin-health")
    page.goto(f"{box.url}/admin/models")
    shadow = page.locator("section", has_text="Shadow versus active").inner_text()
    assert "head-ct-ich-demo 1.0.0 saw 1 series" in shadow and "flag agreement 0.0 %" in shadow
    assert page.locator("svg.scatter circle").count() == 1
    budget = page.locator("section", has_text="Alert budget").inner_text()
    assert "1.000 (current)" in budget and "current threshold 1.000" in budget  # one precision (issue 26)
    assert "under a day: flags per day are the counts so far" in budget  # the box is minutes old (issue 26)
    page.set_input_files("#package", str(package))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-result.ok", timeout=SLOW)
    assert "Verified and installed head-ct-ich-demo 1.2.0" in page.locator("#upload-result").inner_text()
    page.wait_for_selector("table.models td:text-is('1.2.0')", timeout=SLOW)  # after the reload
    screenshot(page, "admin-models")

    page.locator("table.models tr", has=page.locator("td:text-is('1.2.0')")).get_by_role("link", name="Shadow…").click()
    page.wait_for_load_state()
    assert "Confirm: shadow head-ct-ich-demo 1.2.0" in page.locator("h1").inner_text()
    screenshot(page, "admin-confirm")
    page.check("input[name=confirm]")
    page.click("form.stack button[type=submit]", timeout=SLOW)
    page.wait_for_url("**/admin/models?ok=*", timeout=SLOW)
    assert "head-ct-ich-demo 1.2.0 is shadow" in page.locator(".message.ok").inner_text()

    page.goto(f"{box.url}/admin/models/confirm?action=activate&model_id=head-ct-ich-demo&version=1.2.0")
    page.check("input[name=confirm]")
    page.click("form.stack button[type=submit]", timeout=SLOW)
    page.wait_for_url("**/admin/models?ok=*", timeout=SLOW)
    assert "head-ct-ich-demo 1.2.0 is active" in page.locator(".message.ok").inner_text()

    assert "head-ct-ich-demo 1.1.0 is active" in _change(page, box, "Roll back to 1.1.0…")
    kinds = [k for (k,) in box.db().conn.execute("SELECT kind FROM audit_log WHERE payload LIKE '%web:bio%'")]
    assert kinds == ["model-installed", "model-shadow", "model-active", "model-rolled-back"]

    page.goto(f"{box.url}/admin/audit")
    page.get_by_role("link", name="Verify the chain").click()
    page.wait_for_load_state()
    assert "Chain intact" in page.locator("#verify-result").inner_text()
    page.select_option("select[name=kind]", "model-rolled-back")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("table.audit tbody tr").count() == 1
    page.goto(f"{box.url}/admin/audit")
    screenshot(page, "admin-audit")
    page.goto(f"{box.url}/admin/dicom")
    assert "PACS@127.0.0.1:9" in page.content()
    page.get_by_role("button", name="C-ECHO").click()  # nothing listens on port 9: said in words
    page.wait_for_url("**/admin/dicom?error=*", timeout=SLOW)
    assert "no association" in page.locator(".message.error").inner_text()
    assert box.db().conn.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'dicom-echo'").fetchone()[0] == 1
    screenshot(page, "admin-dicom")


def test_a_model_change_needs_its_confirmation(box, page):
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/models/confirm?action=rollback&model_id=head-ct-ich-demo")
    page.evaluate("document.querySelector('input[name=confirm]').removeAttribute('required')")
    page.click("form.stack button[type=submit]")
    page.wait_for_load_state()
    assert "not confirmed" in page.content()
    assert box.db().conn.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'model-rolled-back'").fetchone()[0] <= 1


def test_shadowing_the_active_version_is_refused_with_a_409_page_that_says_why(box, page):
    """Issue 26: shadowing the active version demoted it with no warning."""
    sign_in(page, box, "bio")
    active, earlier = box.db().conn.execute(
        "SELECT a.version, (SELECT MAX(version) FROM models WHERE version < a.version) FROM models a "
        "WHERE a.state = 'active'").fetchone()
    page.goto(f"{box.url}/admin/models")
    row = page.locator("table.models tr", has=page.locator(f"td:text-is('{active}')"))
    assert row.get_by_role("link", name="Shadow…").count() == 0
    assert row.get_by_role("link", name=f"Roll back to {earlier}…").count() == 1

    page.goto(f"{box.url}/admin/models/confirm?action=shadow&model_id=head-ct-ich-demo&version={active}")
    page.check("input[name=confirm]")
    with page.expect_response("**/admin/models/change") as answer:
        page.click("form.stack button[type=submit]")
    assert answer.value.status == 409
    page.wait_for_load_state()
    assert "conflicts with the models' current state" in page.locator("h1").inner_text()
    why = page.locator(".message.error").inner_text()
    assert f"head-ct-ich-demo {active} is the active version" in why and "no active model" in why
    screenshot(page, "admin-models-conflict")
    page.get_by_role("link", name="Back to Models").click()
    page.wait_for_load_state()
    assert page.url.endswith("/admin/models")
    state = box.db().conn.execute("SELECT state FROM models WHERE version = ?", (active,)).fetchone()[0]
    assert state == "active"


def test_an_admin_adds_a_user_and_creates_and_revokes_a_token(box, page):
    sign_in(page, box, "boss")
    page.goto(f"{box.url}/admin/users")
    form = page.locator("form[action='/admin/users']")
    form.locator("input[name=name]").fill("dr.who")
    form.locator("select[name=role]").select_option("radiologist")
    form.locator("input[name=password]").fill("a long enough secret")
    form.locator("button").click()
    page.wait_for_load_state()
    assert "user dr.who added" in page.locator(".message.ok").inner_text()
    tokens = page.locator("form[action='/admin/tokens']")
    tokens.locator("input[name=name]").fill("prometheus")
    tokens.locator("select[name=role]").select_option("biomed")
    tokens.locator("button").click()
    page.wait_for_load_state()
    secret = page.locator("#new-token").inner_text()
    assert secret.startswith("tap_")
    screenshot(page, "admin-users")
    row = page.locator("tr", has_text="prometheus")
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_load_state()
    assert "revoked" in page.locator("tr", has_text="prometheus").inner_text()
    assert secret not in page.content()


def test_a_fresh_box_says_how_to_create_the_first_user(page, tmp_path):
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path / "data"),
                                      "APPLIANCE_WEB_PORT": str(free_port())})
    server, thread, url = start_server(settings)
    try:
        page.goto(f"{url}/worklist")
        assert page.url.endswith("/login")
        assert "appliance users add NAME --role admin" in page.locator(".notice").inner_text()
        screenshot(page, "login-first-run")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _models_box(root, keys, active, shadow=None):
    """A box with no series: ``active`` installed and active, ``shadow`` (if any) installed
    and in shadow, a biomed "bio"; yields the box and the active model under a server."""
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(root / "data"),
                                      "APPLIANCE_MODELS_TRUSTED_KEYS": ",".join(map(str, keys)),
                                      "APPLIANCE_WEB_PORT": str(free_port())})
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, keys)
    model = registry.install(active, "test")
    registry.activate(model.id, model.version, "test")
    if shadow is not None:
        staged = registry.install(shadow, "test")
        registry.shadow(staged.id, staged.version, "test")
    accounts.add_user(db.conn, "bio", "biomed", PASSWORD, "test")
    server, thread, url = start_server(settings)
    yield Box(settings, url), model
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def one_version_box(tmp_path_factory, demo_packages):
    """A box whose only model has a single version, active: the shipped head-CT package."""
    yield from _models_box(tmp_path_factory.mktemp("one-version"), [demo_packages["public_key"]],
                           demo_packages["head-ct"][0])


@pytest.fixture(scope="module")
def unseen_shadow_box(tmp_path_factory, demo_packages):
    """The shipped head-CT package active and the same model re-signed as 1.9.0 in shadow,
    before any series has arrived."""
    root = tmp_path_factory.mktemp("unseen-shadow")
    key = root / "test.key"
    assert training_cli(["keygen", "--out", str(key)]) == 0
    later = rebuilt(demo_packages["head-ct"][0], key, root, "1.9.0")
    yield from _models_box(root, [demo_packages["public_key"], key.with_suffix(".pub")],
                           demo_packages["head-ct"][0], later)


def _shadow_panel_stands_alone(page) -> None:
    """With nothing to compare, the Shadow panel runs the full width above the Alert budget
    instead of a short tile beside its long table (issue 26: a large empty space)."""
    def panel(heading: str) -> dict:
        return page.locator("section.panel", has=page.locator(f"h2:text-is('{heading}')")).bounding_box()

    installed, shadow, budget = panel("Installed"), panel("Shadow versus active"), panel("Alert budget (read-only)")
    assert abs(shadow["width"] - installed["width"]) < 2 and abs(budget["width"] - installed["width"]) < 2
    assert shadow["y"] + shadow["height"] <= budget["y"]


def test_the_shadow_panel_says_what_shadow_is_when_no_model_is_in_shadow(one_version_box, page):
    box, _ = one_version_box
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/models")
    says = page.locator("#shadow-empty").inner_text()
    assert says.startswith("No model is in shadow.")
    assert "runs beside the active one on the same series, is never shown or sent" in says
    assert "appliance models shadow ID VERSION" in says
    assert page.locator("svg.scatter").count() == 0
    _shadow_panel_stands_alone(page)
    screenshot(page, "admin-models-no-shadow")


def test_the_shadow_panel_names_a_shadow_that_has_seen_no_series(unseen_shadow_box, page):
    box, model = unseen_shadow_box
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/models")
    says = page.locator("#shadow-empty").inner_text()
    assert says == (f"{model.id} 1.9.0 is in shadow and has not seen a series yet; the comparison with "
                    "the active model appears here once it reads one.")
    _shadow_panel_stands_alone(page)


def test_a_model_with_one_version_offers_no_rollback_and_its_confirm_page_says_why(one_version_box, page):
    """Issue 26: "Roll back…" was offered with no earlier version to go back to."""
    box, model = one_version_box
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/models")
    row = page.locator("table.models tr", has=page.locator(f"td:text-is('{model.version}')"))
    assert "active" in row.inner_text()
    assert "no earlier version to roll back to" in row.locator("td.actions").inner_text()
    assert row.get_by_role("link", name=re.compile("Roll back")).count() == 0
    assert page.get_by_role("link", name=re.compile("Roll back")).count() == 0

    answer = page.goto(f"{box.url}/admin/models/confirm?action=rollback&model_id={model.id}")
    assert answer.status == 409
    assert "conflicts with the models' current state" in page.locator("h1").inner_text()
    why = page.locator(".message.error").inner_text()
    assert f"{model.id} has no earlier version installed: there is nothing to roll back to" in why
    assert page.locator("input[name=confirm]").count() == 0  # nothing to confirm
    # The refusal is a Models page: its tab is highlighted, as on every other admin page (issue 26 review).
    assert page.locator("nav a[aria-current=page]").all_inner_texts() == ["Models"]
    page.get_by_role("link", name="Back to Models").click()
    page.wait_for_load_state()
    assert page.url.endswith("/admin/models")
    states = box.db().conn.execute("SELECT version, state FROM models").fetchall()
    assert [tuple(s) for s in states] == [(model.version, "active")]


def test_the_audit_page_takes_days_as_the_box_writes_them(one_version_box, page):
    """Issue 26: the date filter read mm/dd/yyyy (the browser's locale) while the log says YYYY-MM-DD."""
    box, _ = one_version_box
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/audit")
    for name in ("since", "until"):
        field = page.locator(f"input[name={name}]")
        assert (field.get_attribute("type"), field.get_attribute("placeholder")) == ("text", "YYYY-MM-DD")
    today = dt.datetime.now(dt.UTC).date()
    page.fill("input[name=since]", today.isoformat())
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert f"since={today.isoformat()}" in page.url
    assert "model-active" in page.locator("table.audit").inner_text()
    page.fill("input[name=since]", (today + dt.timedelta(days=1)).isoformat())
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("table.audit tbody").inner_text().strip() == "No rows"


def test_audit_details_split_no_label_and_no_short_value(one_version_box, page):
    """Issue 26 screenshots: with every character a break point the details read
    "signing ke / y:", "sc instance u / id:" and "version: 1.2. / 0". A label stays on one
    line; a value breaks only where a long UID or hash must."""
    box, model = one_version_box
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/audit")
    lines = page.eval_on_selector_all(  # (label, value, lines the label takes, lines the value takes)
        "table.audit dl.fields > div",
        "divs => { const n = e => new Set(Array.from(e.getClientRects(), r => Math.round(r.top))).size;"
        " return divs.map(d => { const [t, v] = [d.querySelector('dt'), d.querySelector('dd')];"
        " return [t.textContent, v.textContent, n(t), n(v)]; }); }")
    assert any(name == "package sha256" for name, *_ in lines)  # the long rows are there
    assert [name for name, _, dt_lines, _ in lines if dt_lines != 1] == []
    short = [(name, value, dd_lines) for name, value, _, dd_lines in lines if " " not in value and len(value) <= 16]
    assert ("version", model.version, 1) in short
    assert [s for s in short if s[2] != 1] == []


@pytest.mark.parametrize(("path", "below"), [("/admin", "#throughput"), ("/admin/dicom", "#destinations")])
def test_a_row_of_tiles_keeps_the_gap_panels_keep_to_the_panel_below(one_version_box, page, path, below):
    """Issue 26 screenshots: the Health tiles sat flush on "Throughput", the DICOM ones on
    "Destinations", at 1366 and 1920 alike, where every other panel has a gap."""
    box, _ = one_version_box
    sign_in(page, box, "bio")
    for width, height in ((1366, 768), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{box.url}{path}")
        tiles, panel = page.locator("div.tiles").bounding_box(), page.locator(below).bounding_box()
        assert panel["y"] - (tiles["y"] + tiles["height"]) >= 12, (width, tiles, panel)


def test_the_reset_password_field_shows_its_whole_hint(one_version_box, page):
    """Issue 26 screenshots: the field read "new password, 12+ char" at 1366 and 1920."""
    box, _ = one_version_box
    accounts.add_user(box.db().conn, "boss", "admin", PASSWORD, "test")
    sign_in(page, box, "boss")
    for width, height in ((1366, 768), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{box.url}/admin/users")
        fields = page.locator("input[name=password][placeholder^='new password']")
        assert fields.count() == 2  # bio and boss
        for field in fields.all():
            room, needed = field.evaluate(
                "e => { const s = getComputedStyle(e), c = document.createElement('canvas').getContext('2d');"
                " c.font = s.font; return [e.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight),"
                " c.measureText(e.placeholder).width]; }")
            assert needed <= room, (width, needed, room)


def test_a_young_box_says_its_daily_rates_are_over_the_last_hour(box, page):
    """Issue 26 screenshots: minutes after the first image the Health page said "rates over
    the 1 h 00 min since the first image" (the rates are floored at an hour)."""
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin")
    day = page.locator("#throughput tr", has=page.locator("th", has_text="last day"))
    assert day.locator(".rates-over").inner_text() == "rates over the last hour: the first image came under an hour ago"
    assert "since the first image" not in page.locator("#throughput").inner_text()


def test_the_dicom_page_add_buttons_look_like_the_other_admin_pages_buttons(one_version_box, page):
    """Issue 26 review: "Add peer" and "Add destination" were plain buttons beside the
    primary "Upload and verify", "Add user" and "Create token" of the other admin pages."""
    box, _ = one_version_box
    sign_in(page, box, "bio")
    look = ("e => { const s = getComputedStyle(e);"
            " return [e.className, s.backgroundColor, s.color, s.borderColor, s.fontWeight]; }")
    page.goto(f"{box.url}/admin/models")
    upload = page.get_by_role("button", name="Upload and verify").evaluate(look)
    page.goto(f"{box.url}/admin/dicom")
    for name in ("Add peer", "Add destination"):
        assert page.get_by_role("button", name=name, exact=True).evaluate(look) == upload, name

"""The radiologist's pages in a real Chromium against the real server and database."""

from __future__ import annotations

import json
import time

from appliance.db import transaction
from scripts.harness import free_port
from tests.helpers.boxes import IMG_NAME, SCRIPT_NAME, Box, screenshot, sign_in, start_server


def test_radiologist_sees_the_flagged_study_on_top_opens_its_heat_map_and_gives_feedback(box, page):
    sign_in(page, box, "rad")
    assert page.url.endswith("/worklist")
    first = page.locator("#worklist-table tbody tr").first
    assert first.get_attribute("data-study") == box.studies["flagged"]
    assert first.locator(".chip").inner_text().startswith("⚑ Flagged")
    ledger = page.locator("#ledger .equation").inner_text()
    assert "5 received = 1 flagged + 1 not flagged + 1 not analysed + 1 failed + 1 pending" in " ".join(ledger.split())
    screenshot(page, "worklist")

    first.locator("td.patient a").click()
    page.wait_for_load_state()
    image = page.locator("figure.keyslice img").first
    image.wait_for()
    width = page.evaluate("(img) => img.complete ? img.naturalWidth : 0", image.element_handle())
    assert width >= 256  # the secondary capture, decoded and served as PNG
    delivery = page.locator("p.delivery").first.inner_text()
    assert "PACS@127.0.0.1:9" in delivery and "Not sent" not in delivery  # queued for the configured PACS
    tree = page.locator("details.sr-tree").first  # the verdict and score are above it; the full SR on request
    assert tree.get_attribute("open") is None and not tree.locator("table.sr").is_visible()
    tree.locator("summary").click()
    assert tree.locator("table.sr").inner_text().count("\n") >= 3
    screenshot(page, "study-flagged")
    with page.context.expect_page() as opened:
        image.click()
    heat = opened.value
    heat.wait_for_load_state()
    assert heat.url.endswith(".png")
    heat.close()

    page.check("input[value=false-positive]")
    page.fill("textarea[name=comment]", "bleed is a calcification <b>really</b>")
    page.click("form.feedback button[type=submit]")
    page.wait_for_load_state()
    assert "Feedback recorded" in page.locator(".message.ok").inner_text()
    row = page.locator("tr.feedback-row").last.inner_text()
    assert "False positive" in row and "<b>really</b>" in row and "head-ct-ich-demo 1.0.0" in row

    db = box.db()
    stored = db.conn.execute("SELECT verdict, model_version, user_name, audit_seq FROM web_feedback").fetchall()
    assert stored[-1][:3] == ("false-positive", "1.0.0", "rad")
    kind, payload = db.conn.execute("SELECT kind, payload FROM audit_log WHERE seq = ?", (stored[-1][3],)).fetchone()
    assert kind == "web-feedback" and json.loads(payload)["study_instance_uid"] == box.studies["flagged"]


def test_not_analysed_and_failed_studies_say_why_in_words(box, page):
    sign_in(page, box, "rad")
    rows = {r.get_attribute("data-study"): r for r in page.locator("#worklist-table tbody tr").all()}
    skipped = rows[box.studies["not-analysed"]].locator(".chip").inner_text()
    failed = rows[box.studies["failed"]].locator(".chip").inner_text()
    clear = rows[box.studies["not-flagged"]].locator(".chip").inner_text()
    pending = rows[box.studies["pending"]].locator(".chip").inner_text()
    assert skipped == "⊘ Not analysed: no routing rule takes modality MR (they take CT, CR or DX)"  # whole (issue 26)
    assert "[" not in skipped and "'" not in skipped  # a sentence, not a Python list (issue 26)
    names = {r: rows[r].locator("td.patient").inner_text() for r in rows}
    assert names[box.studies["not-analysed"]] == "Mr, Brain"  # Mr^Brain as PACS viewers show it
    assert names[box.studies["failed"]] == "Broken, Pixels"
    assert failed.startswith("✕ Failed") and "decode failed" in failed
    assert clear == "✓ Not flagged"
    assert pending.startswith("◐ Pending") and "receiving for" in pending
    assert len({skipped.split(":")[0], failed.split(":")[0], clear, pending.split(":")[0]}) == 4
    # Analysed rows name their model and version; the others do not pretend to.
    assert "head-ct-ich-demo 1.1.0" in rows[box.studies["not-flagged"]].inner_text()
    assert "head-ct-ich-demo" not in rows[box.studies["not-analysed"]].inner_text()

    # Dates are typed as the box writes them (ISO), not in the browser's locale (mm/dd/yyyy).
    since = page.locator("input[name=since]")
    assert (since.get_attribute("type"), since.get_attribute("placeholder")) == ("text", "YYYY-MM-DD")
    page.goto(f"{box.url}/worklist?state=not-analysed")
    assert page.locator("#worklist-table tbody tr").count() == 1
    page.reload()
    assert page.locator("select[name=state]").input_value() == "not-analysed"
    screenshot(page, "worklist-filtered-not-analysed")
    page.goto(f"{box.url}/studies/{box.studies['failed']}")
    assert "The analysis did not complete" in page.content()
    # Its "not analysed" notice says where it went, as a result does (issue 26 review).
    notice = page.locator("p.notice-delivery").inner_text()
    assert notice == "“Not analysed” notice: ◐ Waiting to be sent to PACS@127.0.0.1:9", notice
    screenshot(page, "study-failed")
    page.goto(f"{box.url}/studies/{box.studies['not-analysed']}")
    assert "not looked at by the AI" in page.content()
    notice = page.locator("p.notice-delivery").inner_text()  # no routing rule took the MR series: no notice
    assert notice.startswith("No “not analysed” notice was made for this series"), notice
    # The series has no SeriesNumber: its heading names none rather than its place on the page.
    assert page.locator("section.series h2").inner_text().startswith("MR ")
    screenshot(page, "study-not-analysed")


def test_hostile_patient_names_show_as_text(box, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, box, "rad")
    names = page.locator("td.patient a").all_inner_texts()
    assert SCRIPT_NAME in names and IMG_NAME in names
    assert page.title() != "pwned" and not dialogs
    assert page.locator("#worklist-table img").count() == 0
    assert page.locator("#worklist-table script").count() == 0
    page.goto(f"{box.url}/studies/{box.studies['not-flagged']}")
    assert page.locator("h1.patient-name").inner_text() == IMG_NAME
    assert page.title() != "pwned" and page.locator("img[src=x]").count() == 0


def test_the_worklist_picks_up_new_results_without_a_reload(box, page):
    from appliance.db import open_database
    from appliance.parts import Parts
    from appliance.receive.index import IngestIndex
    from tests.helpers.boxes import ingest_series

    sign_in(page, box, "rad")
    before = page.locator("#live").get_attribute("data-updated")
    db = open_database(box.settings.db_path)
    study, _ = ingest_series(IngestIndex(db), box.settings.spool_dir, 2, name="New^Arrival", patient_id="P-NEW",
                             accession="A200")
    Parts(box.settings).upkeep(db).run_due(time.time())  # the worker's upkeep: the worklist only reads
    page.wait_for_function("(uid) => document.querySelector(`tr[data-study='${uid}']`) !== null", arg=study,
                           timeout=60_000)
    assert page.locator("#live").get_attribute("data-updated") != before
    assert page.locator(f"tr[data-study='{study}'] .chip").inner_text().startswith("◐ Pending")


def test_each_role_lands_on_its_own_start_page(box, page):
    """Issue 26: README says admins land on /admin; they landed on the worklist."""
    for name, start in (("rad", "/worklist"), ("bio", "/admin"), ("boss", "/admin")):
        page.context.clear_cookies()
        sign_in(page, box, name)
        assert page.url.endswith(start), (name, page.url)


def test_a_result_never_sent_says_so_on_a_box_without_a_destination(box, page):
    """Issue 26: the study page said "Result as PACS received it" on a box whose DICOM page
    said "No destination: results stay on the appliance"."""
    study = box.studies["not-flagged"]
    db = box.db()
    queued = db.conn.execute("SELECT * FROM outbox WHERE study_instance_uid = ?", (study,)).fetchall()
    assert queued, "the seeded box queued the result for its PACS"
    with transaction(db.conn) as conn:  # as if the box had had no destination when the result was made
        conn.execute("DELETE FROM outbox WHERE study_instance_uid = ?", (study,))
    dicom = box.settings.dicom.model_copy(update={"destinations": ()})
    web = box.settings.web.model_copy(update={"port": free_port()})
    settings = box.settings.model_copy(update={"dicom": dicom, "web": web})
    server, thread, url = start_server(settings)
    try:
        sign_in(page, Box(settings, url), "rad")
        page.goto(f"{url}/studies/{study}")
        delivery = page.locator("p.delivery").first.inner_text()
        assert delivery == "Not sent to PACS: no DICOM destination is configured. The result stays on the appliance."
        assert "PACS received" not in page.content()
        screenshot(page, "study-no-destination")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        with transaction(db.conn) as conn:
            conn.executemany(f"INSERT INTO outbox VALUES ({', '.join('?' * len(queued[0]))})", queued)

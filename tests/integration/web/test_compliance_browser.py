"""The compliance report from the audit page, in Chromium (issue 23): a biomed user finds
the form with the last 30 days filled in, downloads the report as a printable page and as text, and reads what
``appliance report compliance`` prints; the download is audited under their name."""

from __future__ import annotations

import datetime as dt
import json

from tests.helpers.boxes import screenshot, sign_in


def test_biomed_downloads_the_compliance_report_from_the_audit_page(box, page, tmp_path):
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/audit")
    form = page.locator("form#compliance")
    today = dt.datetime.now(dt.UTC).date()
    assert form.locator("input[name=to]").input_value() == today.isoformat()
    assert form.locator("input[name=from]").input_value() == (today - dt.timedelta(days=29)).isoformat()
    screenshot(page, "admin-audit-compliance")
    form.locator("input[name=from]").fill("2026-01-01")
    with page.expect_download() as waiting:  # the printable page is the default
        form.locator("button[type=submit]").click()
    printable = waiting.value
    assert printable.suggested_filename == f"compliance-2026-01-01-{today.isoformat()}.html"
    saved = tmp_path / printable.suggested_filename
    printable.save_as(saved)
    document = saved.read_text(encoding="utf-8")
    page.goto(saved.as_uri())  # opened as saved, away from the box's page and its CSP
    assert page.locator("h1").inner_text() == f"Compliance report, 2026-01-01 to {today.isoformat()}"
    assert [h.strip() for h in page.locator("h2").all_inner_texts()] == [
        "Studies and results", "Not analysed, by reason", "Models", "Alerts and access", "Audit trail",
        "Availability and storage"]
    assert "chain verified" in page.locator("body").inner_text()
    assert not any(who in document for who in ("P-MR", "P-BROKEN", "Broken^Pixels", "Mr^Brain"))
    screenshot(page, "compliance-report-printable")
    page.goto(f"{box.url}/admin/audit")
    form.locator("input[name=from]").fill("2026-01-01")
    form.locator("select[name=format]").select_option("text")
    with page.expect_download() as waiting:
        form.locator("button[type=submit]").click()
    download = waiting.value
    assert download.suggested_filename == f"compliance-2026-01-01-{today.isoformat()}.txt"
    text = open(download.path(), encoding="utf-8").read()
    assert text.startswith(f"Compliance report, 2026-01-01 to {today.isoformat()} (UTC days, both included")
    assert "chain verified" in text and "Downtime" in text
    assert not any(who in text for who in ("P-MR", "P-BROKEN", "Broken^Pixels", "Mr^Brain"))  # no patient identifier
    exported = [json.loads(p) for (p,) in box.db().conn.execute(
        "SELECT payload FROM audit_log WHERE kind = 'web-compliance-exported'")]
    assert {"from": "2026-01-01", "to": today.isoformat(), "format": "text", "actor": "web:bio"} in exported
    assert {"from": "2026-01-01", "to": today.isoformat(), "format": "html", "actor": "web:bio"} in exported

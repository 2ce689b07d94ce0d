"""The DICOM and health pages in Chromium: peers and destinations added and removed (kept
across a restart), dead letters retried and discarded, the breaker the sender saved, and
the health page's rates and time to result."""

from __future__ import annotations

import json
import time

import httpx
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from appliance.config import load_settings, local_dicom_path
from appliance.send.outbox import Outbox, lane_states
from appliance.send.policy import BreakerMode
from appliance.send.sender import Sender
from appliance.formats import duration
from appliance.web.health_stats import windows
from scripts.harness import free_port, wait_until
from tests.helpers.boxes import SCREENSHOTS, screenshot, session_client, sign_in
from tests.helpers.series import ct_dataset
from appliance.send.outbox import OutgoingObject

OLD = "PACS@127.0.0.1:9"  # the box's configured destination: nothing listens there


def _audit(box, kind: str) -> list[dict]:
    return [json.loads(p) for (p,) in box.db().conn.execute(
        "SELECT payload FROM audit_log WHERE kind = ? ORDER BY seq", (kind,))]


def _result_file(folder, seed: int = 0):
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=16, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, ds


def _breaker_opened_by_a_real_sender(box, tmp_path) -> list[int]:
    """One readable object and two unreadable ones for the dead port: the sender dead-letters
    the unreadable ones and opens its circuit after five refused connections."""
    sender = Sender(box.settings, box.db())
    path, ds = _result_file(tmp_path / "results")
    # Each failed association is tried when the backoff allows, on a clock that starts as
    # far back as the backoffs add up to: the circuit opens at the latest now, never "in the
    # future", which the box would take for a wall clock stepped back (and show half-open).
    cfg = box.settings.sender
    waits = sum(min(cfg.retry_max_s, cfg.retry_initial_s * 2**k) for k in range(cfg.breaker_failures - 1))
    now = next_at = time.time() - waits
    sender.outbox.enqueue(OutgoingObject.of(path, ds), [OLD], now=now)
    dead = [sender.outbox.enqueue(OutgoingObject(tmp_path / f"gone-{n}.dcm", ds.SOPClassUID, generate_uid(),
                                                 ds.StudyInstanceUID), [OLD], now=now)[0] for n in range(2)]
    for _ in range(box.settings.sender.breaker_failures):
        now = max(next_at, now)
        next_at = sender.send_due_once(now)[OLD].next_at
    assert sender.breaker(OLD).mode(now) is BreakerMode.OPEN
    return dead


def test_biomed_manages_peers_destinations_and_dead_letters_and_a_restart_keeps_them(box, page, tmp_path):
    dead = _breaker_opened_by_a_real_sender(box, tmp_path)
    scp = AE(ae_title="NEWPACS")
    scp.add_supported_context(Verification)
    scp.add_supported_context(CTImageStorage)
    stored: list[str] = []
    scp_port = free_port()
    server = scp.start_server(("127.0.0.1", scp_port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: stored.append(event.request.AffectedSOPInstanceUID) or 0x0000)])
    new = f"NEWPACS@127.0.0.1:{scp_port}"
    try:
        sign_in(page, box, "bio")
        page.goto(f"{box.url}/admin/dicom")
        row = page.locator("#destinations tbody tr", has=page.locator(f"code:text-is('{OLD}')"))
        breaker = row.locator("td.breaker").inner_text()
        # in a hospital IT person's words: "paused", not the breaker's "open" (which reads as working)
        assert "paused" in breaker and "after 5 failed associations" in breaker and "no connection" in breaker
        letters = page.locator("section.dead-letters")
        assert f"Dead letters for {OLD} (2)" in letters.locator("h2").inner_text()
        assert "cannot read result file" in letters.inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1366, "height": 768})
        letters.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "admin-dicom-dead-letters.png"))

        page.get_by_role("button", name=f"Retry object {dead[0]}").click()
        page.wait_for_url("**/admin/dicom?ok=*")
        assert f"object {dead[0]} queued again" in page.locator(".message.ok").inner_text()
        page.get_by_role("button", name=f"Discard object {dead[1]}").click()
        page.wait_for_url("**/admin/dicom?ok=*")
        assert page.locator("section.dead-letters .empty").count() == 1
        outbox = Outbox(box.db())
        assert outbox.get(dead[0]).state == "pending" and outbox.get(dead[1]) is None
        assert [(a["outbox_id"], a["actor"]) for a in _audit(box, "outbox-retried")] == [(dead[0], "web:bio")]
        assert [(a["outbox_id"], a["actor"]) for a in _audit(box, "outbox-discarded")] == [(dead[1], "web:bio")]

        for peer in ("CT_9@10.0.0.9", "ECHO@127.0.0.1"):
            page.fill("#new-peer", peer)
            page.get_by_role("button", name="Add peer").click()
            page.wait_for_url("**/admin/dicom?ok=*")
        assert "after the appliance service restarts" in page.locator(".message.ok").inner_text()
        page.get_by_role("button", name="Remove peer CT_9@10.0.0.9").click()
        page.wait_for_url("**/admin/dicom?ok=*")
        page.fill("#new-peer", "CT_9@scanner.local")  # host names are not resolved: refused as in the config
        page.get_by_role("button", name="Add peer").click()
        page.wait_for_load_state()
        assert "peer: 'CT_9@scanner.local': 'scanner.local' is not an IP address or *" in page.content()
        page.goto(f"{box.url}/admin/dicom")
        page.fill("#new-destination", new)
        page.get_by_role("button", name="Add destination").click()
        page.wait_for_url("**/admin/dicom?ok=*")
        page.get_by_role("button", name=f"Remove destination {OLD}").click()
        page.wait_for_url("**/admin/dicom?ok=*")
        assert page.locator("#restart-needed").is_visible()
        assert "added, after restart" in page.locator("#peers").inner_text().lower()
        assert "CT_9@10.0.0.9" not in page.locator("#peers").inner_text()
        table = page.locator("#destinations tbody").inner_text().lower()
        assert "removed, after restart" in table and "added, after restart" in table
        page.get_by_role("button", name=f"C-ECHO {new}").click()  # a new destination answers at once
        page.wait_for_url("**/admin/dicom?ok=*")
        assert "0x0000" in page.locator(".message.ok").inner_text()
        screenshot(page, "admin-dicom-changes")

        kinds = [(k, json.loads(p).get("peer") or json.loads(p).get("destination")) for k, p in box.db().conn.execute(
            "SELECT kind, payload FROM audit_log WHERE kind LIKE 'dicom-%-added' OR kind LIKE 'dicom-%-removed' "
            "ORDER BY seq")]
        assert kinds == [("dicom-peer-added", "CT_9@10.0.0.9"), ("dicom-peer-added", "ECHO@127.0.0.1"),
                         ("dicom-peer-removed", "CT_9@10.0.0.9"), ("dicom-destination-added", new),
                         ("dicom-destination-removed", OLD)]

        # A restart: the settings are loaded again, as the listener and the sender load them.
        assert local_dicom_path(box.settings.data_dir).exists()
        restarted = load_settings(environ={"APPLIANCE_DATA_DIR": str(box.settings.data_dir),
                                           "APPLIANCE_DICOM_DESTINATIONS": OLD})
        assert [p.text for p in restarted.dicom.peers] == ["ECHO@127.0.0.1"]
        assert [d.text for d in restarted.dicom.destinations] == [new]
        sender = Sender(restarted, box.db())
        path, ds = _result_file(tmp_path / "after-restart", seed=3)
        sender.outbox.enqueue(OutgoingObject.of(path, ds), restarted.dicom.destinations)
        wait_until(lambda: sender.send_due_once(time.time())[new].sent == 1 or ds.SOPInstanceUID in stored,
                   what="the new destination to receive the object")
        assert stored == [ds.SOPInstanceUID]
        assert lane_states(box.db().conn)[new].breaker.mode(time.time()) is BreakerMode.CLOSED
    finally:
        server.shutdown()


def test_dicom_changes_need_the_csrf_token_and_the_right_role(box):
    before = local_dicom_path(box.settings.data_dir).read_bytes() \
        if local_dicom_path(box.settings.data_dir).exists() else None
    bio, csrf = session_client(box, "bio")
    assert bio.post("/admin/dicom/peers/add", data={"entry": "X@10.0.0.1"}).status_code == 403
    assert bio.post("/admin/dicom/peers/add", data={"entry": "X@10.0.0.1", "csrf": csrf},
                    headers={"Origin": "http://evil.example"}).status_code == 403
    rad, rad_csrf = session_client(box, "rad")
    assert rad.post("/admin/dicom/peers/add", data={"entry": "X@10.0.0.1", "csrf": rad_csrf}).status_code == 403
    assert rad.post("/admin/dicom/outbox/1/discard", data={"csrf": rad_csrf}).status_code == 403
    after = local_dicom_path(box.settings.data_dir).read_bytes() \
        if local_dicom_path(box.settings.data_dir).exists() else None
    assert before == after
    answer = bio.post("/admin/dicom/destinations/add", data={"entry": "PACS@host:99999", "csrf": csrf})
    assert answer.status_code == 400 and "port 99999 is not in 1-65535" in answer.text
    assert bio.post("/admin/dicom/outbox/999999/retry", data={"csrf": csrf}).status_code == 404
    assert isinstance(bio, httpx.Client)


def test_the_health_page_shows_rates_time_to_result_and_the_oldest_pending_series(box, page):
    hour, day = windows(box.db().conn, time.time())
    assert hour.instances >= 40 and hour.analysed >= 2  # the seeded studies
    sign_in(page, box, "bio")
    rows = page.locator("#throughput tbody tr")
    assert rows.nth(0).locator("th").inner_text() == "last hour"
    assert rows.nth(1).locator("th").inner_text().startswith("last day")  # with how long the box has been up
    assert rows.nth(0).locator("td").nth(0).inner_text().startswith(f"{hour.instances} (")
    assert rows.nth(1).locator("td").nth(1).inner_text().startswith(f"{day.analysed} (")
    latency = rows.nth(0).locator("td")
    assert hour.to_result_p50 is not None  # the seeded results arrived minutes after their series
    assert (latency.nth(2).inner_text(), latency.nth(3).inner_text()) == (
        duration(hour.to_result_p50), duration(hour.to_result_p95))
    assert page.locator("#oldest-pending").inner_text().startswith("CT receiving for")
    screenshot(page, "admin-health-rates")


def test_adding_or_removing_a_peer_can_be_undone_from_the_message(box, page):
    """Issue 26: an addition undone leaves no trace (the file keeps no "removed" entry)."""
    sign_in(page, box, "bio")
    page.goto(f"{box.url}/admin/dicom")
    page.fill("#new-peer", "UNDO@10.0.0.77")
    page.get_by_role("button", name="Add peer").click()
    page.wait_for_url("**/admin/dicom?ok=*")
    assert "UNDO@10.0.0.77" in page.locator("#peers").inner_text()
    screenshot(page, "admin-dicom-undo")
    page.get_by_role("button", name="Undo: take UNDO@10.0.0.77 out again").click()
    page.wait_for_url("**/admin/dicom?ok=*")
    assert "peer UNDO@10.0.0.77 removed" in page.locator(".message.ok").inner_text()
    assert "UNDO@10.0.0.77" not in page.locator("#peers").inner_text()
    page.get_by_role("button", name="Undo: put UNDO@10.0.0.77 back").click()
    page.wait_for_url("**/admin/dicom?ok=*")
    assert "UNDO@10.0.0.77" in page.locator("#peers").inner_text()
    page.get_by_role("button", name="Undo: take UNDO@10.0.0.77 out again").click()
    page.wait_for_url("**/admin/dicom?ok=*")
    saved = json.loads(local_dicom_path(box.settings.data_dir).read_text())["peers"]
    assert "UNDO@10.0.0.77" not in saved["added"] + saved["removed"]

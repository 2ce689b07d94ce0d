"""The hub as a real process on loopback and two appliance data dirs against it, on SQLite
and on PostgreSQL: enrolment, signed requests, reports exactly once through a hub that
dies and comes back, releases that end in shadow on both boxes."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.sync import report_queue, signing
from appliance.sync.client import HubClient, HubError, http_client
from appliance.sync.identity import Enrolment, key_path, load_or_create_key, public_bytes
from appliance.sync.round import enrol, run_round, status
from tests.helpers.hub import (
    CHEST_LABEL,
    CHEST_PACKAGE,
    CHEST_VERSION,
    REPO,
    box_env,
    box_settings,
    make_report,
    wait_for,
)

CHEST = CHEST_PACKAGE
HOUR = 3600.0


def _no_sleep(_: float) -> None:
    """Backoff waits are the code's choice; the tests need not sit through them."""


def _enrolled(hub, tmp_path, name: str, **overrides: str):
    settings = box_settings(tmp_path / name, **overrides)
    enrol(settings, hub.url, hub.token(site=name))
    return settings


def _queue(settings, count: int, **kwargs) -> list[str]:
    conn = open_database(settings.db_path).conn
    reports = [make_report(**kwargs) for _ in range(count)]
    for report in reports:
        assert report_queue.enqueue_report(conn, report)
    return [r["report_id"] for r in reports]


def test_enrolment_refuses_a_wrong_or_used_token_and_pins_the_key(hub, tmp_path):
    settings = box_settings(tmp_path / "box-a")
    token = hub.token()
    with pytest.raises(HubError, match="enrolment token is not valid"):
        enrol(settings, hub.url, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    # the real command line, once, with the real token
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "sync", "enrol", "--hub", hub.url,
                          "--token", token], env=box_env(settings), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    enrolment = Enrolment.load(settings.data_dir)
    assert key_path(settings.data_dir).stat().st_mode & 0o777 == 0o600
    assert json.loads(Enrolment.root_path(settings.data_dir).read_text())["signed"]["_type"] == "root"

    other = box_settings(tmp_path / "box-b")
    with pytest.raises(HubError, match="enrolment token was already used"):
        enrol(other, hub.url, token)
    listed = hub.admin("devices").stdout
    assert enrolment.device_id in listed and listed.count("\n") == 1
    db = hub.database()
    pinned = db.one("SELECT public_key FROM devices WHERE device_id = ?", (enrolment.device_id,))[0]
    db.close()
    assert base64.b64decode(pinned) == public_bytes(load_or_create_key(settings.data_dir))


def test_unknown_key_stale_timestamp_and_replayed_request_are_refused(hub, tmp_path):
    settings = _enrolled(hub, tmp_path, "box-a")
    enrolment = Enrolment.load(settings.data_dir)
    body = {"appliance_version": "0.1.0", "models": [], "metadata_refreshed_at": None, "release_error": None}
    with http_client(hub.url, 20) as http:
        good = HubClient(http, enrolment.device_id, load_or_create_key(settings.data_dir))
        assert good.post("/v1/checkin", body)["device_id"] == enrolment.device_id

        stranger = HubClient(http, enrolment.device_id, Ed25519PrivateKey.generate())
        with pytest.raises(HubError, match="does not verify against the device's pinned key"):
            stranger.post("/v1/checkin", body)
        with pytest.raises(HubError, match="unknown device"):
            HubClient(http, "0" * 32, load_or_create_key(settings.data_dir)).post("/v1/checkin", body)
        with pytest.raises(HubError, match="outside the 300 s window"):
            good.post("/v1/checkin", body, now=time.time() - 3600)

        # the same signed bytes sent twice: the second is a replay
        raw = json.dumps(body).encode()
        timestamp, nonce = int(time.time()), secrets.token_hex(16)
        message = signing.signing_string("POST", "/v1/checkin", raw, timestamp, nonce, enrolment.device_id)
        headers = {"Content-Type": "application/json", "X-Device-Id": enrolment.device_id,
                   "X-Timestamp": str(timestamp), "X-Nonce": nonce,
                   "X-Signature": signing.sign(load_or_create_key(settings.data_dir), message)}
        assert http.post("/v1/checkin", content=raw, headers=headers).status_code == 200
        replay = http.post("/v1/checkin", content=raw, headers=headers)
        assert replay.status_code == 401 and "replay" in replay.json()["error"]
        # a signature moved onto another body does not verify
        moved = http.post("/v1/checkin", content=raw.replace(b"0.1.0", b"9.9.9"),
                          headers={**headers, "X-Nonce": secrets.token_hex(16)})
        assert moved.status_code == 401 and "does not verify" in moved.json()["error"]
        assert http.post("/v1/reports", json={"reports": []}).status_code == 401

        # a revoked device (its key lost) is refused from then on
        assert "revoked" in hub.admin("revoke", enrolment.device_id).stdout
        with pytest.raises(HubError, match="unknown device"):
            good.post("/v1/checkin", body)


def test_reports_from_two_boxes_arrive_exactly_once_and_bad_ones_are_named(hub, tmp_path):
    boxes = [_enrolled(hub, tmp_path, name, sync_batch_size="7") for name in ("box-a", "box-b")]
    sent = [_queue(box, 20) for box in boxes]
    for box in boxes:
        result = run_round(box, Parts(box).registry(), sleep=_no_sleep)
        assert (result.pushed, result.push_error) == (20, None)
        assert run_round(box, Parts(box).registry(), sleep=_no_sleep).pushed == 0  # nothing is sent twice
    ids = hub.report_ids()
    assert sorted(ids) == sorted(sent[0] + sent[1])

    # the hub refuses what fails the anonymisation schema and names the field
    enrolment = Enrolment.load(boxes[0].data_dir)
    bad = make_report()
    bad["models"][0]["flagged"] = 3  # a cell under k
    strange = make_report()
    strange["models"][0]["comment"] = "Mr Smith"  # free text in an unknown field
    again = json.loads(open_database(boxes[0].db_path).conn.execute(
        "SELECT body FROM sync_reports ORDER BY seq LIMIT 1").fetchone()[0])
    head = {"seq": 1, "hash": "0" * 64}
    with http_client(hub.url, 20) as http:
        answer = HubClient(http, enrolment.device_id, load_or_create_key(boxes[0].data_dir)).post(
            "/v1/reports", {"reports": [{"report": bad, "audit_head": head},
                                        {"report": strange, "audit_head": head},
                                        {"report": again, "audit_head": head}]})["results"]
    assert answer[0]["status"] == "rejected" and "models[0].flagged: 3 is below k=10" in answer[0]["reason"]
    assert answer[1]["status"] == "rejected" and "models[0].comment: unknown key" in answer[1]["reason"]
    assert answer[2]["status"] == "duplicate"
    assert sorted(hub.report_ids()) == sorted(sent[0] + sent[1])

    # each report carries the box's audit chain head: the hub holds an anchor
    db = hub.database()
    anchors = db.rows("SELECT r.audit_seq, r.audit_hash FROM reports r WHERE r.report_id = ?", (sent[0][-1],))
    db.close()
    box_conn = open_database(boxes[0].db_path).conn
    assert box_conn.execute("SELECT seq, hash FROM audit_log WHERE seq = ?", (anchors[0][0],)).fetchone() == \
        anchors[0]
    assert json.loads(box_conn.execute("SELECT payload FROM audit_log WHERE seq = ?",
                                       (anchors[0][0],)).fetchone()[0])["report_id"] == sent[0][-1]
    page = hub.fleet_page()
    assert "box-a" in page and "box-b" in page and "30.0 %" in page  # 12 flagged of 40
    assert '<span class="alert">' not in page

    # a later day whose histogram moved shows as a drift alert for that site only
    shifted = {"hu_mean": {"kind": "histogram", "edges": [0.0, 40.0, 80.0], "counts": [10, 30]}}
    _queue(boxes[1], 1, day="2026-11-21", features=shifted)
    assert run_round(boxes[1], Parts(boxes[1]).registry(), sleep=_no_sleep).pushed == 1
    page = hub.fleet_page()
    assert page.count('<span class="alert">head-ct-ich-demo: hu_mean</span>') == 1
    assert page.index("box-b") < page.index('<span class="alert">head-ct-ich-demo: hu_mean</span>')


def test_killing_the_hub_mid_upload_loses_and_duplicates_nothing(hub, tmp_path):
    settings = _enrolled(hub, tmp_path, "box-a", sync_batch_size="1", sync_round_attempts="3")
    sent = _queue(settings, 300)
    sync = subprocess.Popen([sys.executable, "-m", "appliance.cli", "sync"], env=box_env(settings), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(hub.report_ids()) >= 5, what="the upload to be under way")
        hub.kill9()
        held_when_killed = len(hub.report_ids())
        assert held_when_killed < len(sent), "the upload finished before the kill; the test proved nothing"
        assert sync.wait(timeout=120) == 1  # the round says it did not finish
    finally:
        if sync.poll() is None:
            sync.kill()
    assert report_queue.counts(open_database(settings.db_path).conn)["pending"] > 0
    hub.start()
    result = run_round(settings, Parts(settings).registry(), sleep=_no_sleep)
    assert result.push_error is None
    ids = hub.report_ids()
    assert len(ids) == len(set(ids)) == len(sent) and set(ids) == set(sent)
    assert report_queue.counts(open_database(settings.db_path).conn)["delivered"] == len(sent)


def test_a_thousand_reports_queued_while_the_hub_is_down_all_arrive_once(hub, tmp_path):
    settings = _enrolled(hub, tmp_path, "box-a")
    hub.stop()
    sent = _queue(settings, 1000)
    down = run_round(settings, Parts(settings).registry(), sleep=_no_sleep)
    assert down.pushed == 0 and "hub unreachable" in down.push_error
    assert "unreachable" in down.release_error  # stale metadata blocks updates; nothing else stops
    assert status(settings)["reports"]["pending"] == 1000
    hub.start()
    up = run_round(settings, Parts(settings).registry(), sleep=_no_sleep)
    assert (up.pushed, up.push_error) == (1000, None)
    ids = hub.report_ids()
    assert len(ids) == len(set(ids)) == 1000 and set(ids) == set(sent)
    order = [r[0] for r in open_database(settings.db_path).conn.execute(
        "SELECT report_id FROM sync_reports ORDER BY done_at, seq")]
    assert order == sent  # in queue order


def test_a_published_release_ends_in_shadow_on_both_boxes(hub, tmp_path):
    boxes = [_enrolled(hub, tmp_path, name) for name in ("box-a", "box-b")]
    assert "published" in hub.publish(CHEST)
    for box in boxes:
        result = run_round(box, Parts(box).registry(), sleep=_no_sleep)
        assert result.staged == [CHEST_LABEL], result
        registry = ModelRegistry(open_database(box.db_path), box.models_dir, [])
        assert [(m.id, m.version, m.state) for m in registry.models()] == [
            ("chest-cr-pneumothorax-demo", CHEST_VERSION, "shadow")]  # never active
        assert run_round(box, Parts(box).registry(), sleep=_no_sleep).staged == []  # staged once
    page = hub.fleet_page()
    assert page.count(f"{CHEST_LABEL} (shadow)") == 2


def test_a_box_clock_stepped_an_hour_is_refused_by_name_and_its_reports_wait_for_the_clock(hub, tmp_path):
    """Issue 24's clock steps during sync: the hub refuses every request signed an hour off
    its clock, saying so; nothing is lost or marked delivered, and the round after the
    clock is put right delivers each report once."""
    settings = _enrolled(hub, tmp_path, "box-a")
    sent = _queue(settings, 3)
    for step in (-HOUR, +HOUR):
        stepped = run_round(settings, Parts(settings).registry(), sleep=_no_sleep,
                            clock=lambda step=step: time.time() + step)
        assert stepped.pushed == 0
        assert "X-Timestamp: outside the 300 s window of the hub's clock" in stepped.push_error
        assert "outside the 300 s window" in stepped.checkin_error
        assert status(settings)["reports"]["pending"] == 3 and hub.report_ids() == []
    right = run_round(settings, Parts(settings).registry(), sleep=_no_sleep)
    assert (right.pushed, right.push_error, right.checkin_error) == (3, None, None)
    assert sorted(hub.report_ids()) == sorted(sent)


"""Hostile drift reports and requests against a real hub process, from enrolled boxes:
free text in category labels, SQL in every field."""

from __future__ import annotations

import httpx

from appliance.db import open_database
from appliance.parts import Parts
from appliance.sync import report_queue
from appliance.sync.client import HubClient, HubError, http_client
from appliance.sync.identity import Enrolment, load_or_create_key
from appliance.sync.round import enrol, run_round
from tests.helpers.hostile import case
from tests.helpers.hub import box_settings, make_report

IDENTIFYING = "DOE JOHN MRN 4455667"  # what a scanner's Manufacturer field was made to carry (D1)


def enrolled(hub, tmp_path, name: str):
    settings = box_settings(tmp_path / name)
    enrol(settings, hub.url, hub.token(site=name))
    return settings


def labelled_report() -> dict:
    """A valid report whose category labels are free text, each seen in k series or more."""
    report = make_report()
    report["models"][0]["features"]["manufacturer_model"] = {
        "kind": "categorical", "counts": {IDENTIFYING: 12, "ACME Scan 64": 28}}
    return report


def hub_text(hub) -> str:
    db = hub.database()
    try:
        return repr(db.rows("SELECT * FROM reports"))
    finally:
        db.close()


@case("H9-report-schema")
def test_an_identifying_category_label_is_withheld(hub, tmp_path, case_id):
    """The hub keeps a category label only when it is on its allow-list; the report is
    accepted (a rejected one is never sent again, so the day would be lost) and the box is
    told how many labels were withheld."""
    box = enrolled(hub, tmp_path, "box-a")
    enrolment = Enrolment.load(box.data_dir)
    head = {"seq": 1, "hash": "0" * 64}
    with http_client(hub.url, 20) as http:
        client = HubClient(http, enrolment.device_id, load_or_create_key(box.data_dir))
        [answer] = client.post("/v1/reports", {"reports": [{"report": labelled_report(), "audit_head": head}]})["results"]
    assert answer["status"] == "accepted" and answer.get("withheld"), answer
    assert IDENTIFYING not in hub_text(hub)


@case("D2-hub-holds-labels")
def test_the_hub_keeps_no_free_text_category(hub, tmp_path, case_id):
    """The box queues its day's report as it does, a sync round sends it: whatever the hub
    keeps or shows, the identifying label is not in it."""
    box = enrolled(hub, tmp_path, "box-a")
    assert report_queue.enqueue_report(open_database(box.db_path).conn, labelled_report())
    run_round(box, Parts(box).registry(), sleep=lambda _: None)
    assert IDENTIFYING not in hub_text(hub)
    assert IDENTIFYING not in hub.fleet_page()


SQL = ["x' OR '1'='1", "'); DROP TABLE devices;--", "1; DELETE FROM reports", "\" OR \"\"=\""]


@case("H7-sqli")
def test_sql_in_every_field_is_only_data(hub, tmp_path, case_id):
    boxes = [enrolled(hub, tmp_path, name) for name in ("box-a", "box-b")]
    enrolment = Enrolment.load(boxes[0].data_dir)
    key = load_or_create_key(boxes[0].data_dir)
    with http_client(hub.url, 20) as http:
        for text in SQL:
            forged = HubClient(http, text, key)
            try:
                forged.post("/v1/checkin", {"appliance_version": "0.1.0", "models": []})
                raise AssertionError(f"X-Device-Id {text!r} was accepted")
            except HubError as exc:
                assert "401" in str(exc) or "unknown device" in str(exc), str(exc)
            body = {"appliance_version": text, "models": [{"id": text, "version": text, "state": text}],
                    "metadata_refreshed_at": None, "release_error": text}
            answer = http.post("/v1/checkin", json=body)  # unsigned: refused before any query
            assert answer.status_code == 401
            client = HubClient(http, enrolment.device_id, key)
            try:
                client.post("/v1/checkin", body)
            except HubError as exc:  # refused as malformed is fine; a 500 is not
                assert "500" not in str(exc), str(exc)
        good = HubClient(http, enrolment.device_id, key).post(
            "/v1/checkin", {"appliance_version": "0.1.0", "models": [], "metadata_refreshed_at": None,
                            "release_error": None})
        assert good["device_id"] == enrolment.device_id
    db = hub.database()
    try:
        assert db.rows("SELECT COUNT(*) FROM devices")[0][0] == 2
    finally:
        db.close()
    assert httpx.get(f"{hub.url}/fleet").status_code == 401

"""The sync's pure pieces and its tables: request signatures, the device key, the report
outbox, which releases a box takes, and the fleet page's drift statistic."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.audit import chain as audit_log
from appliance.db import open_database
from appliance.errors import ReportError, SyncError
from appliance.sync import report_queue, signing
from appliance.sync.identity import key_path, load_or_create_key, public_bytes
from appliance.sync.releases import Candidate, choose
from tests.helpers.hub import make_report
from training.hub.fleet import (
    SiteRow,
    drifting_features,
    feature_psi,
    merge_features,
    psi,
    psi_by_day,
    release_target,
    render,
    sparkline,
)
from training.hub.fleet import collect as fleet_collect
from training.hub.releases import Rule, evaluate, record_release
from training.hub.releases import collect as releases_collect
from training.hub.releases import render as render_releases
from training.hub.service import Device, take_reports
from training.hub.store import HubDatabase


def test_a_signature_binds_method_path_body_time_nonce_and_device():
    key = Ed25519PrivateKey.generate()
    parts = ("POST", "/v1/reports", b'{"a":1}', 1_700_000_000, "ab" * 16, "dev1")
    signature = signing.sign(key, signing.signing_string(*parts))
    assert signing.verify(public_bytes(key), signing.signing_string(*parts), signature)
    for index, other in enumerate(("GET", "/v1/checkin", b'{"a":2}', 1_700_000_001, "cd" * 16, "dev2")):
        changed = list(parts)
        changed[index] = other
        assert not signing.verify(public_bytes(key), signing.signing_string(*changed), signature), index
    assert not signing.verify(public_bytes(Ed25519PrivateKey.generate()), signing.signing_string(*parts), signature)
    assert not signing.verify(public_bytes(key), signing.signing_string(*parts), "not base64!")


def test_the_device_key_is_made_once_private_to_its_owner(tmp_path):
    key = load_or_create_key(tmp_path)
    assert key_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert public_bytes(load_or_create_key(tmp_path)) == public_bytes(key)
    os.chmod(key_path(tmp_path), 0o644)
    with pytest.raises(SyncError, match="readable by others"):
        load_or_create_key(tmp_path)


def test_the_outbox_refuses_what_the_hub_would_and_anchors_each_report_in_the_audit_chain(tmp_path):
    conn = open_database(tmp_path / "a.db").conn
    report = make_report()
    assert report_queue.enqueue_report(conn, report, now=1.0)
    assert not report_queue.enqueue_report(conn, report, now=2.0)  # once per report id
    bad = make_report()
    bad["models"][0]["series"] = 4
    with pytest.raises(ReportError, match=r"models\[0\]\.series: 4 is below k=10"):
        report_queue.enqueue_report(conn, bad)
    [queued] = report_queue.pending(conn, 10)
    assert queued.report == report
    head = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    assert queued.as_upload()["audit_head"] == {"seq": head[0], "hash": head[1]}
    assert audit_log.verify_database(open_database(tmp_path / "a.db")) == []

    second = make_report()
    report_queue.enqueue_report(conn, second)
    batch = report_queue.pending(conn, 10)
    assert [q.report_id for q in batch] == [report["report_id"], second["report_id"]]
    report_queue.record_failure(conn, batch, "hub unreachable")
    assert report_queue.counts(conn)["pending"] == 2
    with pytest.raises(ValueError, match="does not match"):
        report_queue.record_results(conn, batch, [{"report_id": second["report_id"], "status": "accepted"}] * 2)
    assert report_queue.record_results(conn, batch, [
        {"report_id": report["report_id"], "status": "duplicate"},
        {"report_id": second["report_id"], "status": "rejected", "reason": "day: must be a day"}]) == (1, 1)
    counts = report_queue.counts(conn)
    assert (counts["pending"], counts["delivered"], counts["rejected"]) == (0, 1, 1)
    assert counts["recent_rejections"][0]["reason"] == "day: must be a day"


def _custom(model_id, version, ring="all", minimum="0.1.0"):
    return {"model_id": model_id, "version": version, "ring": ring, "min_appliance_version": minimum}


def test_a_box_takes_the_newest_release_for_its_ring_and_version_only():
    targets = {
        "a-1.1.0.tar": _custom("a", "1.1.0"),
        "a-1.2.0.tar": _custom("a", "1.2.0"),
        "a-2.0.0.tar": _custom("a", "2.0.0", minimum="9.0.0"),     # needs a newer appliance
        "b-1.0.0.tar": _custom("b", "1.0.0", ring="pilot"),       # pilot sites only
        "c-0.9.0.tar": _custom("c", "0.9.0"),                     # older than installed
        "d-1.0.0.tar": _custom("d", "1.0.0"),                     # refused before
        "e-1.0.0.tar": {"model_id": "e"},                          # not a release
    }
    installed = {"a": ["1.0.0"], "c": ["1.0.0"]}
    assert choose(targets, installed, "all", "0.1.0", {"d-1.0.0.tar"}) == [Candidate("a-1.2.0.tar", "a", "1.2.0")]
    assert [c.model_id for c in choose(targets, installed, "pilot", "0.1.0", set())] == ["a", "b", "d"]


def test_population_stability_flags_a_shifted_feature_only():
    assert psi([50, 50], [50, 50]) == 0
    assert psi([90, 10], [10, 90]) > 1
    steady = {"hu": {"kind": "histogram", "edges": [0, 1, 2], "counts": [30, 70]},
              "kv": {"kind": "categorical", "counts": {"120": 60, "100": None}}}
    shifted = {"hu": {"kind": "histogram", "edges": [0, 1, 2], "counts": [80, 20]},
               "kv": {"kind": "categorical", "counts": {"120": 62, "100": None}}}
    assert drifting_features([steady, steady, shifted]) == ["hu"]
    assert drifting_features([shifted]) == []
    merged = merge_features(steady, shifted)
    assert merged["hu"]["counts"] == [110, 90] and merged["kv"]["counts"] == {"120": 122, "100": 0}
    by_day = psi_by_day([steady, steady, shifted])
    assert by_day["hu"][:2] == [None, 0] and by_day["hu"][2] > 0.25 and by_day["kv"][2] < 0.01
    assert sparkline([0.5]) == "" and sparkline([0.0, None, 1.0], width=20, height=10) == "0.0,10.0 20.0,0.0"


def test_categories_are_compared_label_by_label_not_by_position():
    before = {"kernel": {"kind": "categorical", "counts": {"FC23": 40}}}
    after = {"kernel": {"kind": "categorical", "counts": {"B70f": 40}}}
    assert feature_psi(before["kernel"], after["kernel"]) > 1
    assert feature_psi(before["kernel"], before["kernel"]) == 0
    assert drifting_features([before, before, after]) == ["kernel"]
    assert psi_by_day([before, after])["kernel"][1] > 1
    histogram = {"kind": "histogram", "edges": [0, 1, 2], "counts": [1, 2]}
    assert feature_psi(histogram, before["kernel"]) is None


def test_the_fleet_page_shows_the_box_alerts_beside_the_hub_psi():
    row = SiteRow("dev1", "Site A", "all", 5.0, "0.1.0", [], feature_psi={"m: kernel": 1.5},
                  box_alerts=[("m 1.0.0: kernel", 1.5, "m-1.0.0.tar"), ("m 1.0.0: flag", None, "m-1.0.0.tar")])
    page = render([row])
    assert '<span class="box-alert">m 1.0.0: kernel</span> <span class="muted">hub PSI 1.50</span>' in page
    # each alert links to its release's field evidence (issue 25)
    assert page.count('<a class="release-link" href="/releases#m-1.0.0.tar">release evidence</a>') == 2
    assert '<span class="box-alert">m 1.0.0: flag</span> <span class="muted">hub PSI no figure</span>' in page
    # the hub's own alerts link to their release the same way (issue 25)
    row.drift_alerts = [("m: kernel", "m-2.0.0.tar")]
    assert ('<span class="alert">m: kernel</span> <a class="release-link" href="/releases#m-2.0.0.tar">'
            'release evidence</a>') in render([row])
    assert "not reported" in render([SiteRow("dev2", "Site B", "all", None, "0.1.0", [])])
    assert "1 site. PSI is the population stability index" in page and "site(s)" not in page  # issue 26


def test_a_hub_drift_alert_links_to_the_release_whose_reports_moved(tmp_path):
    """Issue 25: the hub's alert keeps its model version, and its link lands on that
    release's section of the releases page, not on another version of the model."""
    db = HubDatabase(str(tmp_path / "hub.db"))
    db.execute("INSERT INTO devices (device_id, public_key, site, ring, enrolled_at) VALUES (?,?,?,?,?)",
               ("dev1", "key1", "Site A", "all", 0.0))
    device = Device("dev1", "Site A", "all")
    shifted = {"hu_mean": {"kind": "histogram", "edges": [0.0, 40.0, 80.0], "counts": [10, 30]}}
    steady = make_report()["models"][0]["features"]
    for day, old, new in (("2026-11-20", steady, steady), ("2026-11-21", steady, steady),
                          ("2026-11-22", steady, shifted)):
        report = make_report(day=day)
        report["models"] = [{**report["models"][0], "model_version": "1.0.0", "features": old},
                            {**report["models"][0], "model_version": "2.0.0", "features": new}]
        answer = take_reports(db, device, {"reports": [{"report": report, "audit_head": {"seq": 1, "hash": "0" * 64}}]},
                              1.0)
        assert [a["status"] for a in answer] == ["accepted"]
    for version in ("1.0.0", "2.0.0"):
        target = SimpleNamespace(path=release_target("head-ct-ich-demo", version), hashes={"sha256": "0" * 64},
                                 length=1)
        record_release(db, target, SimpleNamespace(id="head-ct-ich-demo", version=version), "all", "0.1.0", 1.0)

    [row] = fleet_collect(db, 2.0)
    assert row.drift_alerts == [("head-ct-ich-demo: hu_mean", "head-ct-ich-demo-2.0.0.tar")]
    page = render([row])
    link = '<a class="release-link" href="/releases#head-ct-ich-demo-2.0.0.tar">release evidence</a>'
    assert f'<span class="alert">head-ct-ich-demo: hu_mean</span> {link}' in page
    found = releases_collect(db)
    rule = Rule()
    releases_page = render_releases(found, {r.target: evaluate(r, rule) for r in found}, rule)
    assert '<section class="release" id="head-ct-ich-demo-2.0.0.tar">' in releases_page


def test_the_fleet_page_escapes_what_it_shows():
    row = SiteRow("dev1", "<script>alert(1)</script>", "all", 5.0, "0.1.0",
                  [{"model_id": "m", "version": "1.0.0", "state": "shadow"}])
    page = render([row])
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page

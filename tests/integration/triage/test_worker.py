"""The worker on real ingested series: triaged, not-eligible, failed; leases; audit."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pydicom
import pytest

from appliance.audit import chain as audit_log
from appliance.config import load_settings
from appliance.db import open_database, transaction
from appliance.errors import LeaseLost
from appliance.jobs import claim
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from scripts.harness import ApplianceProcess
from tests.helpers.dimse import queued_series, send, listener_with_head_ct
from tests.helpers.series import head_ct, write_mr_series
from tests.helpers.sr import coded_value, content_items, only


@pytest.fixture
def box(tmp_path, quick_packages):
    """A running listener, the quick head-CT model active, and worker settings for its data."""
    listener, settings, db, _ = listener_with_head_ct(tmp_path / "data", quick_packages, APPLIANCE_WORKER_LEASE_S="200")
    yield listener, settings, db
    listener.stop()


def test_ct_is_triaged_mr_is_not_eligible_and_both_are_audited(box, tmp_path):
    listener, settings, db = box
    send(listener, head_ct(tmp_path / "ct", seed=11))
    send(listener, write_mr_series(tmp_path / "mr", 10)[1])
    queued_series(listener, 2)

    worker = Parts(settings).worker(db)
    assert worker.run_once() and worker.run_once() and not worker.run_once()

    states = {s["modality"]: s for s in listener.status()["series"]}
    ct, mr_entry = states["CT"], states["MR"]
    assert ct["state"] == "triaged" and isinstance(ct["flag"], bool) and 0 <= ct["score"] <= 1
    assert ct["model"] == "head-ct-ich-demo 1.0.0"
    assert mr_entry["state"] == "not-eligible" and "no routing rule takes modality MR" in mr_entry["reason"]

    [(payload,)] = db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'inference'").fetchall()
    row = json.loads(payload)
    assert row["series_instance_uid"] == ct["series_instance_uid"] and row["role"] == "active"
    assert set(row["latency"]) == {"queue_wait_s", "decode_s", "inference_s", "output_s"}
    assert row["backend"].startswith(("onnxruntime/", "openvino/")) and len(row["input_sha256"]) == 64
    assert audit_log.verify_database(db) == []

    outbox = db.conn.execute("SELECT path, sop_instance_uid, destination, state FROM outbox").fetchall()
    assert {r[1] for r in outbox} == {row["sr_instance_uid"], row["sc_instance_uid"]}
    assert {r[2] for r in outbox} == {"PACS@127.0.0.1:9"} and {r[3] for r in outbox} == {"pending"}
    sr = pydicom.dcmread(next(r[0] for r in outbox if r[1] == row["sr_instance_uid"]))
    assert sr.StudyInstanceUID == ct["study_instance_uid"] and sr.Modality == "SR"


def test_an_undecodable_series_fails_with_the_reason(box, tmp_path):
    listener, settings, db = box
    files = head_ct(tmp_path / "ct", seed=12)
    broken = pydicom.dcmread(files[3])
    # Stored whole (its Pixel Data fits the declared image), but no CT decodes as a palette
    # image without its lookup tables.
    broken.PhotometricInterpretation = "PALETTE COLOR"
    broken.save_as(files[3])
    send(listener, files)
    queued_series(listener, 1)
    assert Parts(settings).worker(db).run_once()
    [entry] = listener.status()["series"]
    assert entry["state"] == "failed" and "decode failed" in entry["reason"]
    # Not silence: the rule claimed the series, so PACS gets a "not analysed" notice, and only that.
    [(path, sop)] = db.conn.execute("SELECT path, sop_instance_uid FROM outbox").fetchall()
    notice = pydicom.dcmread(path)
    assert notice.SeriesDescription.startswith("AI TRIAGE NOT ANALYSED") and notice.SOPInstanceUID == sop
    assert entry["notice_sr_instance_uid"] == sop
    assert db.conn.execute("SELECT reason_code FROM notices").fetchall() == [("NA-FAILED",)]


def test_a_job_whose_worker_vanished_is_triaged_once_by_another(box, tmp_path):
    listener, settings, db = box
    send(listener, head_ct(tmp_path / "ct", seed=13))
    queued_series(listener, 1)
    claimed_at = time.time()  # the clock is injected: no assumption about how long anything takes
    with transaction(db.conn) as conn:
        vanished = claim(conn, "worker-that-died", lease_s=300, max_attempts=3, now=claimed_at)
    assert vanished is not None
    assert listener.status()["series"][0]["state"] == "running"
    survivor = Parts(settings).worker(db, name="survivor")
    assert not survivor.run_once(now=claimed_at + 299)  # the lease has not run out yet
    assert survivor.run_once(now=claimed_at + 301)
    assert listener.status()["series"][0]["state"] == "triaged"
    # The dead worker coming back cannot record the same job again.
    late = Parts(settings).worker(db, name="worker-that-died")
    with pytest.raises(LeaseLost):
        late.outcome.record(late.triage.decide(vanished))
    assert db.conn.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'inference'").fetchone()[0] == 1
    assert db.conn.execute("SELECT attempts, state FROM jobs").fetchone() == (2, "done")


def test_a_series_whose_worker_died_on_every_attempt_fails_and_pacs_gets_a_notice(box, tmp_path):
    listener, settings, db = box
    send(listener, head_ct(tmp_path / "ct", seed=15))
    queued_series(listener, 1)
    now = time.time()  # injected clock: each dead worker's lease runs out 301 s after its claim
    for attempt in range(settings.worker.max_attempts):
        with transaction(db.conn) as conn:
            assert claim(conn, f"dead-{attempt}", 300, settings.worker.max_attempts, now + 301 * attempt)
    assert not Parts(settings).worker(db).run_once(now=now + 301 * settings.worker.max_attempts)
    [entry] = listener.status()["series"]
    assert entry["state"] == "failed" and "abandoned after 3 attempts" in entry["reason"]
    [(path, sop)] = db.conn.execute("SELECT path, sop_instance_uid FROM outbox").fetchall()
    assert entry["notice_sr_instance_uid"] == sop
    assert coded_value(only(pydicom.dcmread(path), "NAREASON", "99TRIAGE")) == ("NA-FAILED", "99TRIAGE")
    assert audit_log.verify_database(db) == []


def test_a_shadow_model_is_audited_and_compared_but_never_sent_or_shown(box, tmp_path, quick_packages):
    listener, settings, db = box
    from tests.helpers.packages import rebuilt

    registry = ModelRegistry(db, settings.models_dir, [quick_packages["public_key"]])
    candidate = registry.install(rebuilt(quick_packages["head-ct"], quick_packages["private_key"], tmp_path,
                                         "1.1.0"), "test")
    registry.shadow(candidate.id, candidate.version, "test")
    send(listener, head_ct(tmp_path / "ct", seed=14))
    queued_series(listener, 1)
    assert Parts(settings).worker(db).run_once()

    rows = [json.loads(p) for (p,) in db.conn.execute(
        "SELECT payload FROM audit_log WHERE kind = 'inference' ORDER BY seq")]
    assert [(r["role"], r["model_version"]) for r in rows] == [("active", "1.0.0"), ("shadow", "1.1.0")]
    active, shadow = rows
    assert shadow["input_sha256"] == active["input_sha256"]
    assert shadow["agrees"] is (shadow["flag"] == active["flag"])
    assert shadow["score_difference"] == pytest.approx(shadow["score"] - active["score"], abs=1e-5)
    [entry] = listener.status()["series"]
    assert entry["model"] == "head-ct-ich-demo 1.0.0"
    sent = {sop for (sop,) in db.conn.execute("SELECT sop_instance_uid FROM outbox")}
    assert sent == {active["sr_instance_uid"], active["sc_instance_uid"]}


def test_an_unknown_character_set_is_triaged_and_a_changed_transfer_syntax_fails_with_the_reason(box, tmp_path):
    """Issue 13, items 8 and 5. Before: 'ISO_IR 999' alone failed the series as "internal
    error: ValueError"; a stored file whose dataset restated its transfer syntax was decoded
    under the file's word rather than the negotiated one."""
    listener, settings, db = box
    files = head_ct(tmp_path / "ct", seed=13)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 999"
        ds.save_as(path)
    send(listener, files)
    [entry] = queued_series(listener, 1)
    assert Parts(settings).worker(db).run_once()
    [entry] = listener.status()["series"]
    assert entry["state"] == "triaged", entry

    other = head_ct(tmp_path / "other", seed=14)
    send(listener, other)
    deadline = time.monotonic() + 60
    while not (queued := [s for s in listener.status()["series"] if s["state"] == "queued"]):
        assert time.monotonic() < deadline, listener.status()
        time.sleep(0.2)
    [(stored,)] = db.conn.execute("SELECT path FROM instances WHERE series_instance_uid = ? LIMIT 1",
                                  (queued[0]["series_instance_uid"],)).fetchall()
    data = Path(stored).read_bytes()
    start = 144 + struct.unpack_from("<I", data, 140)[0]  # preamble, DICM, (0002,0000) UL, then the meta
    value = b"1.2.840.10008.1.2.2\x00"
    Path(stored).write_bytes(data[:start] + struct.pack("<HH", 0x0002, 0x0010) + b"UI"
                             + struct.pack("<H", len(value)) + value + data[start:])
    assert Parts(settings).worker(db).run_once()
    failed = next(s for s in listener.status()["series"] if s["series_instance_uid"] == queued[0]["series_instance_uid"])
    assert failed["state"] == "failed" and "negotiated" in failed["reason"], failed
    # The head CT rule claimed it by what the listener indexed: PACS gets the notice, not silence.
    assert_failure_notice(db, failed, "negotiated")


def assert_failure_notice(db, entry: dict, words: str) -> None:
    [(path, sop, code)] = db.conn.execute(
        "SELECT o.path, o.sop_instance_uid, n.reason_code FROM notices n JOIN outbox o "
        "ON o.sop_instance_uid = n.sr_instance_uid WHERE n.series_instance_uid = ?",
        (entry["series_instance_uid"],)).fetchall()
    notice = pydicom.dcmread(path)
    assert notice.SeriesDescription.startswith("AI TRIAGE NOT ANALYSED") and code == "NA-FAILED"
    assert notice.StudyInstanceUID == entry["study_instance_uid"] and entry["notice_sr_instance_uid"] == sop
    assert coded_value(only(notice, "NAREASON", "99TRIAGE")) == ("NA-FAILED", "99TRIAGE")
    assert coded_value(only(notice, "121058", "DCM")) == ("24725-4", "LN")  # the head CT rule's procedure
    comments = [item.TextValue for item in content_items(notice) if item.ValueType == "TEXT"]
    assert any(words in text and "read it as usual" in text for text in comments), comments


def test_a_claimed_series_whose_first_header_cannot_be_read_fails_with_a_notice(box, tmp_path):
    """Routing reads the first instance's header; when that fails the series had no claim
    and PACS got nothing. The listener's index still says CT HEAD: the rule claims it."""
    listener, settings, db = box
    send(listener, head_ct(tmp_path / "ct", seed=15))
    [entry] = queued_series(listener, 1)
    [(first,)] = db.conn.execute("SELECT path FROM instances WHERE series_instance_uid = ? ORDER BY received_at "
                                 "LIMIT 1", (entry["series_instance_uid"],)).fetchall()
    data = Path(first).read_bytes()
    start = 144 + struct.unpack_from("<I", data, 140)[0]  # preamble, DICM, (0002,0000) UL, then the meta
    Path(first).write_bytes(data[:start])  # the File Meta, and no dataset after it
    assert Parts(settings).worker(db).run_once()
    [failed] = listener.status()["series"]
    assert failed["state"] == "failed" and "cannot read the header" in failed["reason"], failed
    assert_failure_notice(db, failed, "cannot read the header")

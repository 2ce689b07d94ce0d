"""Dead letters retried and discarded, on the admin page's path and the CLI's: both audited."""

from __future__ import annotations

import json

import pytest

from appliance import cli
from appliance.db import open_database
from appliance.send.outbox import Outbox, OutgoingObject

DESTINATION = "PACS@127.0.0.1:104"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APPLIANCE_DICOM_DESTINATIONS", DESTINATION)
    return tmp_path / "data"


def _outbox_with(data_dir, states: list[str]) -> tuple[Outbox, list[int]]:
    outbox = Outbox(open_database(data_dir / "appliance.db"))
    ids = []
    for n, state in enumerate(states):
        [item] = outbox.enqueue(OutgoingObject(data_dir / f"{n}.dcm", "1.2.840.10008.5.1.4.1.1.7", f"1.2.3.{n}",
                                               "1.2.3"), [DESTINATION], now=100)
        if state == "dead":
            outbox.mark_failed(item, 0xA900, "status 0xA900", None, now=110)
        elif state == "sent":
            outbox.mark_sent(item, 0, None, now=110)
        ids.append(item)
    return outbox, ids


def _audit(data_dir) -> list[tuple[str, dict]]:
    rows = open_database(data_dir / "appliance.db").conn.execute(
        "SELECT kind, payload FROM audit_log WHERE kind LIKE 'outbox-%' ORDER BY seq")
    return [(kind, json.loads(payload)) for kind, payload in rows]


def test_retry_requeues_a_dead_letter_with_a_fresh_count_and_audits_who(data_dir):
    outbox, (dead, sent) = _outbox_with(data_dir, ["dead", "sent"])
    assert outbox.retry(dead, "web:bio", now=500)
    item = outbox.get(dead)
    assert (item.state, item.attempts, item.next_attempt_at) == ("pending", 0, 500)
    assert not outbox.retry(dead, "web:bio")   # pending now: not a dead letter any more
    assert not outbox.retry(sent, "web:bio")   # sent objects are never re-sent by hand
    [(kind, payload)] = _audit(data_dir)
    assert kind == "outbox-retried"
    assert payload == {"outbox_id": dead, "destination": DESTINATION, "sop_instance_uid": "1.2.3.0",
                       "attempts": 1, "last_status": 0xA900, "last_error": "status 0xA900", "flagged_result": False,
                       "actor": "web:bio"}


def test_discard_removes_only_a_dead_letter_and_the_audit_log_keeps_what_it_was(data_dir):
    outbox, (dead, pending) = _outbox_with(data_dir, ["dead", "pending"])
    assert not outbox.discard(pending, "web:bio")
    assert outbox.discard(dead, "web:bio")
    assert outbox.get(dead) is None and outbox.get(pending).state == "pending"
    assert not outbox.discard(dead, "web:bio")
    [(kind, payload)] = _audit(data_dir)
    assert (kind, payload["outbox_id"], payload["sop_instance_uid"]) == ("outbox-discarded", dead, "1.2.3.0")


def test_the_cli_lists_retries_and_discards_dead_letters(data_dir, capsys):
    outbox, (first, second, sent) = _outbox_with(data_dir, ["dead", "dead", "sent"])
    assert cli.main(["outbox", "list", "--dead"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in listed] == [first, second]
    assert "0xA900" in listed[0] and "1.2.3.0" not in listed[0]  # ids, not instance UIDs
    assert cli.main(["outbox", "retry", str(first)]) == 0
    assert cli.main(["outbox", "discard", str(second)]) == 0
    assert cli.main(["outbox", "discard", str(sent)]) == 2  # a refusal, as every other
    assert "is not a dead letter" in capsys.readouterr().err
    assert outbox.get(first).state == "pending" and outbox.get(second) is None
    kinds = [(kind, payload["outbox_id"], payload["actor"].startswith("cli:")) for kind, payload in _audit(data_dir)]
    assert kinds == [("outbox-retried", first, True), ("outbox-discarded", second, True)]


def test_discarding_a_flagged_results_dead_letter_says_so_and_ends_its_alert(data_dir):
    from appliance.db import transaction
    from appliance.send.outbox import OutgoingObject, enqueue_in

    db = open_database(data_dir / "appliance.db")
    outbox = Outbox(db)
    with transaction(db.conn) as conn:
        [flagged] = enqueue_in(conn, OutgoingObject(data_dir / "sr.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.1",
                                                    "2.25.9", alert=True), [DESTINATION], 100.0)
    outbox.mark_failed(flagged, 0xA700, "out of resources", None, now=110)
    assert [i.id for i in outbox.alerts()] == [flagged]
    assert outbox.discard(flagged, "web:bio")
    assert outbox.alerts() == []
    [(kind, payload)] = _audit(data_dir)
    assert (kind, payload["flagged_result"]) == ("outbox-discarded", True)

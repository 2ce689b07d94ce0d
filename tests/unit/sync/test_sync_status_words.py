"""Issue 26: ``appliance sync status`` shows times as UTC dates, not epoch seconds, and
"metadata_refreshed" as true/false, as ``appliance sync`` prints it."""

from __future__ import annotations

import datetime as dt
import json

from appliance.db import open_database, transaction
from appliance.sync.round import summary

AT = dt.datetime(2026, 3, 1, 9, 0, 0, tzinfo=dt.UTC).timestamp()


def test_the_last_round_reads_as_dates_and_booleans(tmp_path):
    db = open_database(tmp_path / "a.db")
    with transaction(db.conn) as conn:
        conn.execute("INSERT INTO sync_rounds (started_at, finished_at, pushed, push_error, metadata_refreshed, "
                     "release_error, staged) VALUES (?,?,?,?,?,?,?)", (AT, AT + 2.5, 3, None, 1, None, "[]"))
    shown = summary(db.conn, tmp_path, now=AT + 60)
    assert shown["last_round"] == {"started_at": "2026-03-01T09:00:00Z", "finished_at": "2026-03-01T09:00:02Z",
                                   "pushed": 3, "push_error": None, "metadata_refreshed": True,
                                   "release_error": None, "staged": []}
    assert shown["metadata"]["last_refreshed_at"] == "2026-03-01T09:00:02Z"
    assert shown["metadata"]["age_s"] == 57.5
    json.dumps(shown)  # what the command prints


def test_sync_status_reads_as_sentences_unless_json_is_asked_for(tmp_path):
    from appliance.cli.commands.sync import status_words

    db = open_database(tmp_path / "a.db")
    assert status_words(summary(db.conn, tmp_path)) == [
        "not enrolled: appliance sync enrol --hub URL --token TOKEN (the token from the hub's operator)"]
    with transaction(db.conn) as conn:
        conn.execute("INSERT INTO sync_rounds (started_at, finished_at, pushed, push_error, metadata_refreshed, "
                     "release_error, staged) VALUES (?,?,?,?,?,?,?)", (AT, AT + 2.5, 3, None, 1, None, "[]"))
    shown = summary(db.conn, tmp_path, now=AT + 60)
    shown["enrolment"] = {"device_id": "dev-1", "ring": "pilot", "hub_url": "https://hub.example"}
    words = status_words(shown)
    assert words[:4] == [
        "enrolled as device dev-1 (ring pilot) at https://hub.example",
        "reports: 0 waiting, 0 delivered, 0 refused",
        "last round: finished 2026-03-01T09:00:02Z, pushed 3 reports, metadata refreshed",
        "release metadata: refreshed 2026-03-01T09:00:02Z (58 s ago)",
    ]


def test_a_round_reads_as_sentences():
    from appliance.cli.commands.sync import round_words
    from appliance.sync.round import RoundResult

    down = RoundResult(queued=1, push_error="hub unreachable: connection refused",
                       release_error="hub unreachable", checkin_error="hub unreachable")
    assert round_words(down) == [
        "reports: pushed 0 reports; 1 newly queued; hub unreachable: connection refused",
        "release metadata: NOT refreshed",
        "releases: hub unreachable",
        "staged in shadow: nothing new",
        "check-in: FAILED: hub unreachable",
    ]
    up = RoundResult(pushed=1, metadata_refreshed=True, staged=["chest 1.2.0"], audit="consistent")
    assert round_words(up)[-3:] == ["staged in shadow: chest 1.2.0", "check-in: the hub has it",
                                    "audit chain at the hub: consistent"]

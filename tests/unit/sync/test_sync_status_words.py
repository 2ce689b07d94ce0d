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

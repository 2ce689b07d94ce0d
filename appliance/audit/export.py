"""``appliance audit export``: the audit log as CSV or JSON, with each row's chain hash."""

from __future__ import annotations

import csv
import json
from typing import TextIO

import sqlite_utils

COLUMNS = ("seq", "at", "kind", "payload", "prev_hash", "hash")


def kinds(db: sqlite_utils.Database) -> list[str]:
    """The kinds of row the audit log holds, sorted."""
    return [k for (k,) in db.conn.execute("SELECT DISTINCT kind FROM audit_log ORDER BY kind")]


def export(db: sqlite_utils.Database, out: TextIO, fmt: str, kind: str | None = None) -> int:
    """Write every row (or those of one kind) in sequence order; return how many."""
    query = "SELECT seq, at, kind, payload, prev_hash, hash FROM audit_log"
    rows = db.conn.execute(query + (" WHERE kind = ?" if kind else "") + " ORDER BY seq", (kind,) if kind else ())
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row)
            count += 1
        return count
    out.write("[")
    for row in rows:
        record = dict(zip(COLUMNS, row, strict=True))
        record["payload"] = json.loads(record["payload"])
        out.write(("," if count else "") + "\n" + json.dumps(record, sort_keys=True))
        count += 1
    out.write("\n]\n")
    return count

"""``backup``: a verified copy of the database, taken while the appliance runs."""

from __future__ import annotations

import argparse
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from appliance.cli.commands.common import actor
from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser("backup", help="copy the database (SQLite online backup) into a dated file and verify it")
    backup.add_argument(
        "--out",
        type=Path,
        help="a new file, or a folder for appliance-<UTC time>.db (default: <data_dir>/backups)",
    )
    backup.set_defaults(func=backup_command)


def backup_command(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.audit.chain import AUDIT_ROWS, append, verify_chain, verify_database
    from appliance.db import backup_database, dated_backup_path

    out = args.out or parts.settings.data_dir / "backups"
    target = dated_backup_path(out, datetime.now(UTC)) if args.out is None or out.is_dir() else out
    db = parts.database()
    # The live log against its anchor (which lives beside the live database, never in a
    # backup), then the copy's own chain: rows appended in between are covered by the chain.
    problems = verify_database(db)
    backup_database(db.conn, target)
    with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as copy:
        problems += verify_chain(copy.execute(AUDIT_ROWS))
    for problem in problems:
        print(f"backup {target}: audit seq {problem.seq}: {problem.problem}")
    append(db, "backup", {"file": str(target), "audit_intact": not problems, "actor": actor()})
    if problems:
        return 1
    print(f"backup written and verified (integrity check, audit chain): {target}")
    return 0

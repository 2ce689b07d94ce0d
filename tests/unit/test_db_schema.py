"""Schema versions (issue 23): a database written by a newer release is refused at start,
with the reason, instead of being used by code that does not know its tables."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from appliance.db import MIGRATIONS, open_database
from appliance.errors import StorageError
from scripts.harness import REPO


def newer_database(path) -> None:
    open_database(path).conn.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")


def test_a_newer_schema_is_refused(tmp_path):
    newer_database(tmp_path / "appliance.db")
    with pytest.raises(StorageError, match=rf"schema {len(MIGRATIONS) + 1}, newer than the {len(MIGRATIONS)}"):
        open_database(tmp_path / "appliance.db")


def test_a_command_on_a_newer_schema_exits_with_the_reason(tmp_path):
    newer_database(tmp_path / "appliance.db")
    done = subprocess.run([sys.executable, "-m", "appliance.cli", "status", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"APPLIANCE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "restore the backup taken before that upgrade" in done.stderr

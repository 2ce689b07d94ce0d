"""`appliance audit verify` names what was tampered with; `audit export` writes every row."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

from appliance.audit import chain
from appliance.db import open_database
from scripts.harness import REPO


def run(data_dir, *args):
    env = {"APPLIANCE_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "appliance.cli", "audit", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)


def test_verify_then_tamper_in_three_ways(tmp_path):
    db = open_database(tmp_path / "appliance.db")
    for n in range(6):
        chain.append(db, "inference" if n % 2 else "model-active", {"n": n})
    assert run(tmp_path, "verify").returncode == 0

    conn = db.conn
    a, b = conn.execute("SELECT payload FROM audit_log WHERE seq IN (2, 3) ORDER BY seq").fetchall()
    conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 2", b)  # reorder two events
    conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 3", a)
    result = run(tmp_path, "verify")
    assert result.returncode == 1 and "seq 2:" in result.stdout and "seq 3:" in result.stdout

    conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 2", a)
    conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 3", b)
    conn.execute("DELETE FROM audit_log WHERE seq = 5")
    result = run(tmp_path, "verify")
    assert result.returncode == 1 and "seq 6: rows missing" in result.stdout


def test_verify_names_a_truncated_log(tmp_path):
    """Issue 24, A4-truncate-tail. Before: rc 0, 'audit log intact'."""
    db = open_database(tmp_path / "appliance.db")
    for n in range(6):
        chain.append(db, "inference", {"n": n})
    db.conn.execute("DELETE FROM audit_log WHERE seq > 4")
    result = run(tmp_path, "verify")
    assert result.returncode == 1 and "seq 6: rows missing: the anchor names seq 6" in result.stdout


def test_export_csv_and_json(tmp_path):
    db = open_database(tmp_path / "appliance.db")
    for n in range(3):
        chain.append(db, "inference", {"n": n})
    chain.append(db, "model-installed", {"id": "x"})
    rows = list(csv.DictReader(io.StringIO(run(tmp_path, "export").stdout)))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4"] and rows[0]["hash"] == rows[1]["prev_hash"]
    exported = json.loads(run(tmp_path, "export", "--format", "json", "--kind", "inference").stdout)
    assert [r["payload"]["n"] for r in exported] == [0, 1, 2]

"""scripts/check-layers on small synthetic trees: bad imports and doubly written tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO

CHECK_LAYERS = REPO / "scripts" / "check-layers"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def check_layers(root: Path) -> tuple[int, list[str]]:
    out = subprocess.run([sys.executable, str(CHECK_LAYERS), str(root)],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout.splitlines()


CLEAN = {
    "appliance/__init__.py": "",
    "appliance/errors.py": "class ApplianceError(Exception):\n    pass\n",
    "appliance/db.py": 'SCHEMA = "CREATE TABLE jobs (id); INSERT INTO jobs VALUES (1)"\n',
    "appliance/jobs.py": 'from appliance.errors import ApplianceError\n'
                         'def finish(conn):\n    conn.execute("UPDATE jobs SET state = ?", ("done",))\n'
                         '    conn.execute("INSERT INTO jobs (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2")\n',
    "appliance/triage/__init__.py": "",
    "appliance/triage/preprocess.py": "def window(x):\n    return x\n",
    "appliance/triage/worker.py": "from appliance import jobs\nfrom ..triage import preprocess\n",
    "appliance/report/__init__.py": "",
    "appliance/report/render.py": '"""Never INSERT INTO jobs here (a docstring is no writer)."""\n'
                                  "from appliance.errors import ApplianceError\n",
    "training/__init__.py": "from appliance.triage.preprocess import window\n",
}


def test_a_tree_that_keeps_the_rules_passes(tmp_path):
    assert check_layers(tree(tmp_path, CLEAN)) == (0, [])


def test_an_import_up_the_flow_is_named_with_file_line_and_both_stages(tmp_path):
    root = tree(tmp_path, {
        **CLEAN,
        "appliance/report/render.py": "import numpy\n\nfrom appliance.triage.preprocess import window\n",
        "appliance/receive/__init__.py": "",
        "appliance/receive/listener.py": "def later():\n    from .. import triage\n",
        "training/cli.py": "import appliance.web.pages\n",
        "appliance/web/__init__.py": "",
        "appliance/web/pages.py": "",
    })
    code, lines = check_layers(root)
    assert code == 1
    assert lines == [
        "appliance/receive/listener.py:2: receive imports appliance.triage (triage), which receive may not import",
        "appliance/report/render.py:3: report imports appliance.triage.preprocess (triage), "
        "which report may not import",
        "training/cli.py:1: training imports appliance.web.pages (web), which training may not import",
    ]


def test_a_table_written_by_two_modules_names_both_writers(tmp_path):
    root = tree(tmp_path, {
        **CLEAN,
        "appliance/receive/__init__.py": "",
        "appliance/receive/index.py": (
            "def queue(conn, db):\n"
            "    conn.execute('SELECT 1')\n"
            "    conn.execute('INSERT OR IGNORE INTO jobs (id) VALUES (?)', (1,))\n"
            "    db['series'].upsert({'uid': 1}, pk='uid')\n"),
        "appliance/triage/worker.py": "def record(conn):\n    conn.execute(\n"
                                      "        'UPDATE series SET state = ? WHERE id = ?', ('done', 1))\n",
    })
    code, lines = check_layers(root)
    assert code == 1
    assert lines == [
        "appliance/jobs.py:3: writes table jobs, which appliance/receive/index.py also writes",
        "appliance/receive/index.py:3: writes table jobs, which appliance/jobs.py also writes",
        "appliance/receive/index.py:4: writes table series, which appliance/triage/worker.py also writes",
        "appliance/triage/worker.py:3: writes table series, which appliance/receive/index.py also writes",
    ]


def test_a_module_in_no_stage_is_reported(tmp_path):
    code, lines = check_layers(tree(tmp_path, {**CLEAN, "appliance/gadgets.py": ""}))
    assert (code, lines) == (1, ["appliance/gadgets.py:1: module appliance.gadgets is in no stage; "
                                 "add it to check-layers' table"])

"""scripts/check-layers on small synthetic trees: bad imports and doubly written tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.harness import REPO

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


def test_a_test_importing_another_test_or_a_conftest_is_named(tmp_path):
    root = tree(tmp_path, {
        **CLEAN,
        "tests/__init__.py": "",
        "tests/helpers/__init__.py": "",
        "tests/helpers/sr.py": "def only(sr):\n    return sr\n",
        "tests/unit/report/test_objects.py": "from tests.helpers.sr import only\n\n"
                                             "def test_it():\n    assert only(1) == 1\n",
        "tests/unit/report/test_more.py": "from tests.unit.report.test_objects import only\n",
        "tests/unit/report/test_sibling.py": "import test_objects\n",
        "tests/integration/web/conftest.py": "PASSWORD = 'x'\n",
        "tests/integration/web/test_pages.py": "def test_it():\n"
                                               "    from tests.integration.web.conftest import PASSWORD\n",
        "tests/integration/web/shared.py": "",
        "tests/integration/web/test_shared.py": "from tests.integration.web import shared\n",
        "tests/integration/ddp/runner.py": "",
        "tests/integration/ddp/test_ddp.py": "from runner import main\n",  # a script beside its test
    })
    code, lines = check_layers(root)
    assert code == 1
    assert lines == [
        "tests/integration/web/test_pages.py:2: imports tests.integration.web.conftest, which is test code; "
        "shared test code goes in tests/helpers/",
        "tests/integration/web/test_shared.py:1: imports tests.integration.web, which is test code; "
        "shared test code goes in tests/helpers/",
        "tests/unit/report/test_more.py:1: imports tests.unit.report.test_objects, which is test code; "
        "shared test code goes in tests/helpers/",
        "tests/unit/report/test_sibling.py:1: imports test_objects, which is test code; "
        "shared test code goes in tests/helpers/",
    ]


STATES = (
    '"""Every state, declared once."""\n'
    "from enum import StrEnum\n\n\n"
    "class ModelState(StrEnum):\n    ACTIVE = 'active'\n    SHADOW = 'shadow'\n\n\n"
    "class JobState(StrEnum):\n    QUEUED = 'queued'\n    FAILED = 'failed'\n\n\n"
    "class SeriesState(StrEnum):\n    FAILED = 'failed'\n"
)


def test_state_values_written_outside_the_enums_are_named(tmp_path):
    root = tree(tmp_path, {
        **CLEAN,
        "appliance/states.py": STATES,
        "appliance/db.py": "SCHEMA = \"CREATE TABLE jobs (state CHECK (state IN ('queued', 'failed')))\"\n",
        "appliance/jobs.py": (
            '"""Jobs go from \'queued\' to \'failed\' (a docstring may say so)."""\n'
            "from appliance.states import JobState\n"
            "def claim(conn):\n"
            "    conn.execute(\"SELECT id FROM jobs WHERE state = 'queued'\")\n"
            "    conn.execute('SELECT id FROM jobs WHERE state = ?', (JobState.QUEUED,))\n"
            "    return {'failed': 0, 'done': 1}\n"),
        "appliance/triage/worker.py": (
            "def pick(models, row):\n"
            "    fields = ('model_id', 'failed', 'score')\n"  # names of fields, not states
            "    active = [m for m in models if m.state == 'active']\n"
            "    return active, row['shadow'], fields, ('active', 'shadow')\n"),
        "appliance/web/__init__.py": "",
        "appliance/web/templates/page.html": (
            "<p class=\"failed\">{{ 'x' }}</p>\n"
            "{% if m.state != 'active' %}<a href=\"?state=failed\">{{ ModelState.SHADOW }}</a>{% endif %}\n"),
    })
    code, lines = check_layers(root)
    assert code == 1
    assert lines == [
        "appliance/jobs.py:4: state literal 'queued': use JobState.QUEUED (appliance.states), "
        "passed as an SQL parameter",
        "appliance/triage/worker.py:3: state literal 'active': use ModelState.ACTIVE (appliance.states)",
        "appliance/triage/worker.py:4: state literal 'active': use ModelState.ACTIVE (appliance.states)",
        "appliance/triage/worker.py:4: state literal 'shadow': use ModelState.SHADOW (appliance.states)",
        "appliance/web/templates/page.html:2: state literal 'active': use ModelState.ACTIVE (appliance.states)",
    ]


def test_a_state_value_held_by_several_enums_names_them_all(tmp_path):
    root = tree(tmp_path, {**CLEAN, "appliance/states.py": STATES,
                           "appliance/jobs.py": "def end():\n    return 'failed'\n"})
    assert check_layers(root) == (1, [
        "appliance/jobs.py:2: state literal 'failed': use JobState.FAILED or SeriesState.FAILED (appliance.states)",
    ])

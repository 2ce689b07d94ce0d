"""Every command of README's command table, run once against a real box (issue 26): a
temporary data dir with the shipped head-CT package installed and active, a synthetic
head CT sent by storescu and triaged by ``appliance serve``, Orthanc as the PACS it sends
to, and a real hub to enrol with. Each command must exit as it should and say something a
person reads: not empty, no traceback, no Python repr (``['A', 'B']``, ``None``).

The cases are keyed by the first cell of README's table, so a row added to the table
without a case here fails the test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.demo_box import DEMO_KEY, MODELS, demo_box
from scripts.harness import REPO, free_port, start_process, stop_process
from tests.helpers.hub import HubProcess

#: The module's box (a head CT generated, the package golden-tested on every backend,
#: serve started, the series triaged) is built inside the first test's time: minutes on
#: a busy 2-core machine.
pytestmark = pytest.mark.timeout(900)

HEAD_CT = next(MODELS.glob("head-ct-*.tar"))
MODEL_ID, VERSION = HEAD_CT.stem.rsplit("-", 1)
#: What never belongs in a command's output.
PYTHON_REPR = re.compile(r"\[\s*'|'\s*\]|\{\s*'|\bNone\b|\bTraceback\b|<[a-zA-Z_.]+ object at 0x")


def readme_commands() -> list[str]:
    """The first cell of each row of README's command table."""
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `appliance")]
    return [re.split(r"(?<!\\)\|", row)[1].strip() for row in rows]


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    hub = HubProcess(work / "hub", None)
    for package in sorted(MODELS.glob("*.tar")):
        hub.admin("publish", str(package), "--trusted-key", str(DEMO_KEY), "--ring", "all")
    hub.start()
    try:
        with demo_box(work / "box", light=True) as running:
            running.hub, running.hub_token = hub, hub.token()
            yield running
    finally:
        hub.stop()


def run(box, *args: str, stdin: str | None = None, code: int = 0, out: bool = False) -> str:
    """``appliance ARGS``: exits with ``code`` and says something that reads right; what
    it said on both streams (``out``: standard output alone, for a JSON answer)."""
    done = box.cli(*args, stdin=stdin, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == code, f"appliance {' '.join(args)} exited {done.returncode}: {said[-2000:]}"
    assert said.strip(), f"appliance {' '.join(args)} said nothing"
    for line in said.splitlines():
        if " INFO " in line and "appliance.db" in line:  # the schema's migration log on a first open
            continue
        assert not PYTHON_REPR.search(line), f"appliance {' '.join(args)}: {line!r}"
    return done.stdout if out else said


def long_running(box, command: str, ready: bytes, tmp: Path, **env: str) -> str:
    """Start ``appliance COMMAND`` on free ports, wait for ``ready``, SIGTERM it: it stops
    on its own, exits 0 and logs that it stopped."""
    log = tmp / f"{command}.log"
    environment = {**box.env, "APPLIANCE_DICOM_PORT": str(free_port()), "APPLIANCE_WEB_PORT": str(free_port()), **env}
    process = start_process([sys.executable, "-m", "appliance.cli", command], log, ready, environment, REPO, 120)
    assert stop_process(process, 60), f"{command} needed SIGKILL"
    said = log.read_text()
    assert process.returncode == 0, said[-2000:]
    assert f"{command}: stopped" in said and "Traceback" not in said
    return said


def _serve(box, tmp):
    # The box itself runs `appliance serve`: it received, triaged and sent the head CT.
    status = json.loads(run(box, "status", "--json", out=True))
    assert [s["state"] for s in status["series"]] == ["triaged"]
    third_party = re.findall(r" INFO (?!appliance)[\w.]+:.*", box.appliance.log.read_text())
    assert not third_party, f"third-party INFO lines in the box's log: {third_party[:3]}"  # issue 23: quiet by default
    long_running(box, "serve", b"listening as", tmp)


def _web(box, tmp):
    long_running(box, "web", b"web pages on", tmp)


def _users(box, tmp):
    said = run(box, "users", "add", "carol", "--role", "biomed", stdin="a long enough password\n")
    assert "added biomed carol" in said
    assert "at least 12 characters" in run(box, "users", "add", "dave", "--role", "admin", stdin="short\n", code=2)


def _tokens(box, tmp):
    said = run(box, "tokens", "create", "--role", "radiologist", "--name", "ris-bridge")
    assert said.strip().splitlines()[-1].startswith("tap_")


def _listener_worker(box, tmp):
    long_running(box, "listener", b"listening as", tmp)
    long_running(box, "worker", b"worker: taking jobs", tmp)


def _status(box, tmp):
    assert json.loads(run(box, "status", "--json", out=True))["instances_received"] > 0


def _config(box, tmp):
    assert "valid" in run(box, "config", "validate", str(REPO / "firmware-config" / "appliance.toml"))
    bad = tmp / "bad.toml"
    bad.write_text('[dicom]\nae_titel = "X"\n')  # a misspelt key (the environment overrides any value here)
    assert "dicom.ae_titel: unknown key" in run(box, "config", "validate", str(bad), code=2)
    assert json.loads(run(box, "config", "show", out=True))["dicom"]["ae_title"] == "TRIAGE"


def _verify(box, tmp):
    assert "signature and hashes verified" in run(box, "models", "verify", str(HEAD_CT))
    said = run(box, "models", "verify", str(HEAD_CT), "--trusted-key", str(tmp / "missing.pub"), code=2)
    assert "missing.pub" in said


def _install(box, tmp):
    said = run(box, "models", "install", str(HEAD_CT))  # installed already: idempotent
    assert f"installed {MODEL_ID} {VERSION} (active)" in said and "reads no series" not in said


def _list(box, tmp):
    said = run(box, "models", "list")
    assert said.splitlines()[0].split()[:3] == ["MODEL", "VERSION", "STATE"]
    assert re.search(rf"{MODEL_ID}\s+{re.escape(VERSION)}\s+active\s+\S+\s+0\.\d{{3}}\s+intracranial haemorrhage", said)
    assert json.loads(run(box, "models", "list", "--json", out=True))[0]["id"] == MODEL_ID


def _shadow_activate(box, tmp):
    said = run(box, "models", "shadow", MODEL_ID, VERSION, code=2)
    assert "is the active version" in said  # shadowing it would leave no active model: refused
    said = run(box, "models", "activate", MODEL_ID, VERSION)
    assert re.search(r"ms/image", said) and "is active on" in said


def _rollback(box, tmp):
    assert "no earlier version" in run(box, "models", "rollback", MODEL_ID, code=2)


def _audit_verify(box, tmp):
    assert "intact" in run(box, "audit", "verify").lower()


def _audit_export(box, tmp):
    said = run(box, "audit", "export", "--format", "csv")
    assert said.splitlines()[0].startswith("seq,") and re.search(r"exported \d+ rows\n", said)
    assert json.loads(run(box, "audit", "export", "--format", "json", "--kind", "inference", out=True))
    assert "kinds in the log" in run(box, "audit", "export", "--kind", "bogus", code=2)


def _backup(box, tmp):
    assert "verified" in run(box, "backup", "--out", str(tmp / "backups"))


def _restore(box, tmp):
    # The box is serving: a restore under a running listener is refused before it reads a byte.
    said = run(box, "restore", str(tmp / "backups" / "none.db"), code=2)
    assert "is accepting: stop the appliance" in said and "before a restore" in said


def _compliance(box, tmp):
    today = dt.datetime.now(dt.UTC).date()
    start, end = (today - dt.timedelta(days=1)).isoformat(), today.isoformat()
    said = run(box, "report", "compliance", "--from", start, "--to", end)
    assert said.startswith(f"Compliance report, {start} to {end}") and "Flagged (current results): " in said
    assert f"{MODEL_ID} {VERSION}" in said
    assert json.loads(run(box, "report", "compliance", "--from", start, "--to", end, "--format", "json", out=True))
    assert "YYYY-MM-DD" in run(box, "report", "compliance", "--from", "yesterday", "--to", end, code=2)


def _version(box, tmp):
    assert re.fullmatch(r"appliance \d+\.\d+\.\d+\s*", run(box, "--version"))


def _enrol(box, tmp):
    assert "enrolled as device" in run(box, "sync", "enrol", "--hub", box.hub.url, "--token", box.hub_token)


def _sync(box, tmp):
    said = run(box, "sync")
    assert "release metadata: refreshed" in said and "check-in: the hub has it" in said
    assert json.loads(run(box, "sync", "--json", out=True))["metadata_refreshed"] is True


def _sync_status_queue(box, tmp):
    assert json.loads(run(box, "sync", "status", "--json", out=True))["enrolled"] is True
    assert "enrolled as device" in run(box, "sync", "status")
    report = tmp / "report.json"
    report.write_text(run(box, "drift", "report", "--day", dt.date.today().isoformat(), out=True))
    assert "queued" in run(box, "sync", "queue", str(report))


def _drift_status(box, tmp):
    said = run(box, "drift", "status")
    assert f"{MODEL_ID} {VERSION}" in said and "not judged yet: 1 of" in said
    assert json.loads(run(box, "drift", "status", "--json", out=True))["models"]


def _drift_report(box, tmp):
    assert json.loads(run(box, "drift", "report", "--day", dt.date.today().isoformat(), out=True))["schema"]
    assert "YYYY-MM-DD" in run(box, "drift", "report", "--day", "yesterday", code=2)


def _drift_plot(box, tmp):
    said = run(box, "drift", "plot", "--out", str(tmp / "plots"), out=True).splitlines()
    assert said and all(Path(line).suffix == ".png" and Path(line).is_file() for line in said)


def _outbox(box, tmp):
    said = run(box, "outbox", "list")
    assert box.pacs.destination in said
    assert run(box, "outbox", "list", "--dead").strip() == "no dead letters"
    assert "not a dead letter" in run(box, "outbox", "retry", "1", code=2)
    assert "not a dead letter" in run(box, "outbox", "discard", "1", code=2)


def _dicom(box, tmp):
    assert "*@127.0.0.1" in run(box, "dicom", "peers", "list")
    assert box.pacs.destination in run(box, "dicom", "destinations", "list")
    assert "added; the listener and the sender use it" in run(box, "dicom", "peers", "add", "CT9@10.1.2.3")
    assert "removed; the listener and the sender stop using it" in run(box, "dicom", "peers", "remove", "CT9@10.1.2.3")
    assert "CT9" not in run(box, "dicom", "peers", "list")
    added = run(box, "dicom", "destinations", "add", "RIS9@10.1.2.4:11112")
    assert "destinations: RIS9@10.1.2.4:11112 added; the listener and the sender use it" in added
    listed = run(box, "dicom", "destinations", "list")
    assert "RIS9@10.1.2.4:11112" in listed and "added on this appliance" in listed and box.pacs.destination in listed
    removed = run(box, "dicom", "destinations", "remove", "RIS9@10.1.2.4:11112")
    assert "destinations: RIS9@10.1.2.4:11112 removed; the listener and the sender stop using it" in removed
    assert "RIS9" not in run(box, "dicom", "destinations", "list")


CASES = {
    "`appliance serve`": _serve,
    "`appliance web`": _web,
    "`appliance users add NAME --role radiologist\\|biomed\\|admin`": _users,
    "`appliance tokens create --role ROLE [--name NAME]`": _tokens,
    "`appliance listener` / `appliance worker`": _listener_worker,
    "`appliance status --json`": _status,
    "`appliance config validate [PATH]` / `config show`": _config,
    "`appliance models verify PKG [--trusted-key PEM]`": _verify,
    "`appliance models install PKG`": _install,
    "`appliance models list [--json]`": _list,
    "`appliance models shadow\\|activate ID VERSION`": _shadow_activate,
    "`appliance models rollback ID`": _rollback,
    "`appliance audit verify`": _audit_verify,
    "`appliance audit export [--format csv\\|json] [--kind KIND]`": _audit_export,
    "`appliance backup [--out FILE\\|DIR]`": _backup,
    "`appliance restore FILE [--replace] [--from-data-dir DIR] [--allow-missing]`": _restore,
    "`appliance report compliance --from DAY --to DAY [--format text\\|json]`": _compliance,
    "`appliance --version`": _version,
    "`appliance sync enrol --hub URL --token T`": _enrol,
    "`appliance sync [--json]`": _sync,
    "`appliance sync status [--json]` / `sync queue FILE...`": _sync_status_queue,
    "`appliance drift status [--json]`": _drift_status,
    "`appliance drift report --day YYYY-MM-DD`": _drift_report,
    "`appliance drift plot --out DIR`": _drift_plot,
    "`appliance outbox list [--dead] [--destination AE@host:port]` / `outbox retry\\|discard ID`": _outbox,
    "`appliance dicom peers\\|destinations list` / `add\\|remove ENTRY`": _dicom,
}


def test_every_row_of_the_command_table_has_a_case():
    assert readme_commands() == list(CASES)


@pytest.mark.parametrize("row", list(CASES), ids=[case.__name__.strip("_") for case in CASES.values()])
def test_every_command_reads_right(row, box, tmp_path):
    """One row of the table, in README's order (enrol comes before sync)."""
    CASES[row](box, tmp_path)


def test_a_command_piped_into_head_ends_quietly(box):
    """Output past one buffer, buffered (no PYTHONUNBUFFERED, as in a shell): what is left
    is flushed while the command still handles a reader that has gone, not at exit, where
    it would print "Exception ignored ... BrokenPipeError"."""
    env = {k: v for k, v in box.env.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(f"{sys.executable} -m appliance.cli audit export --format csv | head -1", shell=True,
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("seq,")
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert "BrokenPipeError" not in done.stderr, done.stderr

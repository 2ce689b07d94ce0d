"""Upgrading from the previous release (issue 23, "upgrade from the previous tagged
release's data dir"): a data folder the previous release wrote while it worked is taken over
by this code with nothing lost.

The previous release is found in git history, not hard-coded: the last commit whose version
file (``appliance/__init__.py``) still said the version before the current one, i.e. the
parent of the commit that set the current version. Its tree is extracted with ``git
archive`` and its own code (this interpreter, ``PYTHONPATH`` and working directory set to
that tree) installs and activates its shipped head-CT package, adds a web user, runs
``appliance serve`` and triages a real head CT sent with dcmtk's ``storescu``, then stops on
SIGTERM. The current code then opens that folder and this test proves that:

- the migration ran (the schema is now this code's) after an automatic backup of the old
  database, named ``appliance-schema-<old>-before-<new>-*.db``, holding the old schema, an
  intact audit chain and a restore manifest;
- ``appliance audit verify`` passes on the upgraded database, before and after new work;
- the old series and its result (score, flag, SR UID) are still listed by ``appliance status
  --json``, and the old user still signs in with the old password;
- ``appliance serve`` of the current code triages a new head CT on the same folder, with
  the old release's installed model.

Unlike tests/unit/test_db_schema.py, which trims MIGRATIONS in-process, nothing here is
simulated: the old database is the one the old release's code wrote.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pydicom
import pytest

import appliance
from appliance.audit.chain import AUDIT_ROWS, verify_chain
from appliance.db import MIGRATIONS, backup_manifest
from appliance.web.accounts import authenticate
from scripts.harness import REPO, free_port, start_process, stop_process, tcp_env, wait_until
from tests.helpers.series import head_ct

pytestmark = pytest.mark.slow

VERSION_FILE = Path(appliance.__file__).resolve().relative_to(REPO).as_posix()
PASSWORD = "correct horse battery"
#: A series takes seconds to triage on an idle machine; CI's are loaded (and the activation
#: golden-tests the model first).
TRIAGE_TIMEOUT_S = 600.0


def git(*args: str, binary: bool = False) -> str | bytes:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=120, text=not binary)
    if done.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr!r}. This test needs the "
                    "repository as a full git clone (CI clones with its whole history)")
    return done.stdout


def version_at(commit: str) -> str:
    text = git("show", f"{commit}:{VERSION_FILE}")
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not found:
        pytest.fail(f"no __version__ in {VERSION_FILE} at {commit}")
    return found.group(1)


def release_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def previous_release() -> tuple[str, str]:
    """(commit, version): the last commit whose version file says the version before the
    current one."""
    if not (REPO / ".git").exists():
        pytest.fail(f"{REPO} is not a git checkout: the previous release is read from git history")
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.fail("a shallow clone: fetch its whole history (git fetch --unshallow) to find the previous release")
    current = appliance.__version__
    changes = git("log", "--format=%H", "HEAD", "--", VERSION_FILE).split()
    if not changes:
        pytest.fail(f"git history has no commit touching {VERSION_FILE}")
    bump = None  # the oldest commit of the run, newest first, that says the current version
    for commit in changes:
        if version_at(commit) != current:
            break
        bump = commit
    # Without such a commit the current version is not committed yet: HEAD is the previous release.
    previous = "HEAD" if bump is None else f"{bump}^"
    commit = git("rev-parse", "--verify", f"{previous}^{{commit}}").strip()
    version = version_at(commit)
    if release_key(version) >= release_key(current):
        pytest.fail(f"{commit} says {version}, not older than the current {current}")
    return commit, version


def box_env(tree: Path, data: Path, keys: list[Path]) -> dict[str, str]:
    """The environment of one release's ``appliance`` commands on ``data``: only settings
    that release knows (an unknown APPLIANCE_ variable is refused), its code first on the
    path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_") and k != "PYTHONPATH"}
    env.update({
        "PYTHONPATH": str(tree),
        "APPLIANCE_DATA_DIR": str(data),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1",
        "APPLIANCE_DICOM_PEERS": "*@127.0.0.1",
        "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "16",
        # results go to a port nobody listens on: they wait in the outbox
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@127.0.0.1:9",
        "APPLIANCE_WEB_PORT": str(free_port()),
        "APPLIANCE_WEB_BIND_ADDRESS": "127.0.0.1",
        "APPLIANCE_MODELS_TRUSTED_KEYS": ",".join(map(str, keys)),
    })
    if "allow_unencrypted" in (tree / "firmware-config" / "appliance.toml").read_text():
        env["APPLIANCE_ALLOW_UNENCRYPTED"] = "true"  # a scratch folder, not an encrypted volume
    return env


def cli(tree: Path, env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], cwd=tree, env=env, input=stdin,
                          capture_output=True, text=True, timeout=900)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{done.args[3:]} exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


def status(tree: Path, env: dict[str, str]) -> dict:
    return json.loads(ok(cli(tree, env, "status", "--json")).stdout)


def series_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def triage_one(tree: Path, env: dict[str, str], files: list[Path], log: Path) -> dict:
    """``appliance serve`` of ``tree``: send ``files`` (one series), wait until its result is
    listed, stop on SIGTERM; returns its status entry."""
    uid = series_uid(files)
    box = start_process([sys.executable, "-m", "appliance.cli", "serve"], log, b"listening as", env, tree, 180)
    try:
        subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", env["APPLIANCE_DICOM_PORT"], *map(str, files)],
                       env=tcp_env(env), check=True, timeout=300, capture_output=True)

        def triaged() -> dict | None:
            entry = next((s for s in status(tree, env)["series"] if s["series_instance_uid"] == uid), None)
            if entry and entry["state"] in ("failed", "not-eligible"):
                raise AssertionError(f"{tree.name}: the head CT was not analysed: {entry}\n{log.read_text()[-3000:]}")
            return entry if entry and entry["state"] == "triaged" and "result" in entry else None

        entry = wait_until(triaged, TRIAGE_TIMEOUT_S, f"{tree.name}'s result for the head CT", interval=1.0)
    finally:
        stopped = stop_process(box, timeout=120)
    assert stopped, f"{tree.name}'s appliance serve ignored SIGTERM: {log.read_text()[-3000:]}"
    return entry


def user_version(database: Path) -> int:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_a_data_folder_of_the_previous_release_upgrades_with_nothing_lost(tmp_path):
    commit, version = previous_release()
    old = tmp_path / f"appliance-{version}"
    old.mkdir()
    archive = tmp_path / "previous.tar"
    archive.write_bytes(git("archive", "--format=tar", commit, binary=True))
    with tarfile.open(archive) as tar:
        tar.extractall(old, filter="data")
    archive.unlink()
    data = tmp_path / "data"
    # The operator's configuration carries over the upgrade: the same settings, the same
    # trusted key (the one that signed the previous release's shipped package).
    models = old / "firmware-config" / "models"
    (package,) = sorted(models.glob("head-ct-*.tar"))[-1:]
    old_env = box_env(old, data, [models / "demo-signing.pub"])
    new_env = {**old_env, "PYTHONPATH": str(REPO)}
    if "allow_unencrypted" in (REPO / "firmware-config" / "appliance.toml").read_text():
        new_env["APPLIANCE_ALLOW_UNENCRYPTED"] = "true"
    which = "import appliance; print(appliance.__version__, appliance.__file__)"
    loaded = subprocess.run([sys.executable, "-c", which], cwd=old, env=old_env, capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    assert loaded == [version, str(old / "appliance" / "__init__.py")], loaded

    # --- the previous release writes the folder ---------------------------------------
    ok(cli(old, old_env, "models", "install", "--activate", str(package)))
    ok(cli(old, old_env, "users", "add", "rad", "--role", "radiologist", stdin=PASSWORD + "\n"))
    first = head_ct(tmp_path / "ct-before", seed=11)
    before = triage_one(old, old_env, first, tmp_path / "old-serve.log")
    database = data / "appliance.db"
    old_schema = user_version(database)
    with closing(sqlite3.connect(database)) as conn:
        old_audit_rows = len(conn.execute(AUDIT_ROWS).fetchall())
    assert 0 < old_schema < len(MIGRATIONS), f"the previous release left schema {old_schema}"
    assert not (data / "backups").exists()

    # --- this code opens it: backed up, then migrated -----------------------------------
    opened = cli(REPO, new_env, "status", "--json")
    ok(opened)
    assert f"database schema migrated to {len(MIGRATIONS)}" in opened.stderr, opened.stderr
    assert f"before migrating schema {old_schema} to {len(MIGRATIONS)}" in opened.stderr, opened.stderr
    assert user_version(database) == len(MIGRATIONS)
    (kept,) = (data / "backups").iterdir()
    assert kept.name.startswith(f"appliance-schema-{old_schema}-before-{len(MIGRATIONS)}-")
    assert opened.stderr.index("backed up to") < opened.stderr.index("schema migrated to")
    with closing(sqlite3.connect(f"file:{kept}?mode=ro", uri=True)) as copy:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == old_schema
        rows = copy.execute(AUDIT_ROWS).fetchall()
        assert verify_chain(rows) == [] and len(rows) >= old_audit_rows
        manifest = backup_manifest(copy)
    assert manifest and manifest["schema"] == str(old_schema)

    # --- nothing lost: the audit chain, the old study and its result, the user ----------
    assert "audit log intact" in ok(cli(REPO, new_env, "audit", "verify")).stdout
    listed = {s["series_instance_uid"]: s for s in json.loads(opened.stdout)["series"]}
    kept_entry = listed[before["series_instance_uid"]]
    assert {k: kept_entry.get(k) for k in before} == before
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        user = authenticate(conn, "rad", PASSWORD)
    assert user is not None and user.role == "radiologist"

    # --- and this code works on it: a new head CT triaged with the old release's model -------
    second = head_ct(tmp_path / "ct-after", seed=12)
    after = triage_one(REPO, new_env, second, tmp_path / "new-serve.log")
    assert after["model"] == before["model"]
    listed = {s["series_instance_uid"]: s for s in status(REPO, new_env)["series"]}
    assert {k: listed[before["series_instance_uid"]].get(k) for k in before} == before
    assert listed[after["series_instance_uid"]]["state"] == "triaged"
    assert "audit log intact" in ok(cli(REPO, new_env, "audit", "verify")).stdout
    assert len(list((data / "backups").iterdir())) == 1, "a second start backed up again"

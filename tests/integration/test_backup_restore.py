"""``appliance backup`` taken while a series waits in the queue, ``appliance restore`` of it
into a data folder at another path (issue 23): the paths follow, the audit log verifies,
the box receives and triages again, and a series the restored queue works a second time
gets result UIDs the old box never issued (PACS never receives one UID with two contents)."""

from __future__ import annotations

import shutil

import pytest

from appliance.audit.chain import verify_database
from appliance.cli import main
from appliance.config import load_settings
from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.states import ModelState
from appliance.sync import withdrawals
from appliance.web.routes.health import readiness
from scripts.harness import ApplianceProcess, free_port, wait_until
from tests.helpers.dimse import queued_series, send
from tests.helpers.series import head_ct


def environment(data_dir, public_key) -> dict[str, str]:
    return {
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_MODELS_TRUSTED_KEYS": str(public_key),
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@127.0.0.1:9",
        "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "16",
        "APPLIANCE_WORKER_LEASE_S": "200",
        # a port nothing listens on: the restore checks the appliance is stopped there
        "APPLIANCE_DICOM_PORT": str(free_port()),
    }


def use(monkeypatch, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(environ=env)


def waiting(listener: ApplianceProcess, count: int) -> None:
    """Wait until ``count`` series are queued (others may have ended)."""
    wait_until(
        lambda: sum(s["state"] == "queued" for s in listener.status()["series"]) == count,
        what=f"{count} queued series",
        interval=0.2,
    )


def results_by_series(db) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, list[tuple[str, float]]] = {}
    for series, uid, score in db.conn.execute(
        "SELECT series_instance_uid, sr_instance_uid, score FROM inference_results WHERE role = 'active' ORDER BY id"
    ):
        found.setdefault(series, []).append((uid, score))
    return found


@pytest.fixture
def old_box(tmp_path, demo_packages, monkeypatch):
    """The box before the backup: head-CT active, one series triaged, one still queued."""
    env = environment(tmp_path / "old", demo_packages["public_key"])
    listener = ApplianceProcess(
        tmp_path / "old", port=int(env["APPLIANCE_DICOM_PORT"]), dicom_quiet_period_s="30"
    ).start()
    settings = use(monkeypatch, env)
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [demo_packages["public_key"]])
    model = registry.install(demo_packages["head-ct"][0], "test")
    registry.activate(model.id, model.version, "test")
    send(listener, head_ct(tmp_path / "first", seed=21))
    queued_series(listener, 1)
    assert Parts(settings).worker(db).run_once()
    send(listener, head_ct(tmp_path / "second", seed=22))
    waiting(listener, 1)
    yield listener, settings, db
    listener.stop()


def test_a_backup_restored_at_another_path_triages_again_without_reissuing_a_uid(
    old_box, tmp_path, demo_packages, monkeypatch, capsys
):
    listener, old, old_db = old_box
    backup = tmp_path / "backup.db"
    assert main(["backup", "--out", str(backup)]) == 0

    (first_series,) = results_by_series(old_db)
    # After the backup the old box triages the queued series and sends its SR (PACS has it).
    assert Parts(old).worker(old_db).run_once()
    before = results_by_series(old_db)
    listener.stop()
    old_db.conn.close()

    # The new box: the data folder copied file by file (spool, results, models, identity),
    # the database from the backup. A hand copy of the database without its paths moved is
    # not ready: /readyz names the missing files.
    new_dir = tmp_path / "elsewhere" / "data"
    shutil.copytree(old.data_dir, new_dir, ignore=shutil.ignore_patterns("appliance.db*", "backups"))
    shutil.rmtree(old.data_dir / "spool")  # the old box's files are gone: only the copy can serve
    env = environment(new_dir, demo_packages["public_key"])
    new = use(monkeypatch, env)

    shutil.copy(backup, new.db_path)
    by_hand = open_database(new.db_path)
    problem = readiness(by_hand.conn, new, 0.0)["files"]
    assert problem and str(old.data_dir / "spool") in problem
    by_hand.conn.close()
    assert main(["restore", str(backup)]) == 2
    assert "give --replace" in capsys.readouterr().err

    assert main(["restore", str(backup), "--replace"]) == 0
    said = capsys.readouterr().out
    assert f"into {new.db_path}" in said and "1 series to triage again" in said

    db = open_database(new.db_path)
    paths = [
        row[0]
        for row in db.conn.execute(
            "SELECT path FROM instances UNION ALL SELECT path FROM models UNION ALL SELECT path FROM outbox"
        )
    ]
    assert paths and all(path.startswith(f"{new_dir}/") for path in paths)
    assert readiness(db.conn, new, 0.0)["files"] is None
    assert verify_database(db) == []
    assert db.conn.execute("SELECT kind FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()[0] == "restore"

    # The restored queue works the second series again: a new result, under a UID the old
    # box never issued; the first series, which had its result, is not triaged again.
    worker = Parts(new).worker(db)
    assert worker.run_once() and not worker.run_once()
    after = results_by_series(db)
    issued_before = {uid for rows in before.values() for uid, _ in rows}
    assert after[first_series] == before[first_series]
    (second_series,) = set(after) - {first_series}
    (redone,) = after[second_series]
    assert redone[0] not in issued_before

    # The restored box receives and triages a new study with the restored model.
    restored = ApplianceProcess(new_dir, port=int(env["APPLIANCE_DICOM_PORT"]), dicom_quiet_period_s="30").start()
    try:
        send(restored, head_ct(tmp_path / "third", seed=23))
        waiting(restored, 1)
        assert worker.run_once()
    finally:
        restored.stop()
    assert len(results_by_series(db)) == 3
    assert verify_database(db) == []


def test_a_release_withdrawn_after_the_backup_does_not_run_again_in_shadow_after_a_restore(
    tmp_path, demo_packages, monkeypatch, capsys
):
    """The backup holds head CT in shadow; the hub withdraws it afterwards. Restored with
    --replace over the database that knew, it stays out of shadow before any sync round."""
    settings = use(monkeypatch, environment(tmp_path / "box", demo_packages["public_key"]))
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [demo_packages["public_key"]])
    model = registry.install(demo_packages["head-ct"][0], "test")
    registry.shadow(model.id, model.version, "test")
    assert main(["backup", "--out", str(tmp_path / "before.db")]) == 0
    withdrawn = [{"model_id": model.id, "version": model.version}]
    assert withdrawals.apply(db.conn, registry, withdrawn) == [model.label]
    db.conn.close()

    assert main(["restore", str(tmp_path / "before.db"), "--replace"]) == 0
    said = capsys.readouterr().out
    assert f"1 release withdrawal(s) the replaced database knew of applied again; no longer in shadow: {model.label}" in said
    restored = open_database(settings.db_path)
    again = ModelRegistry(restored, settings.models_dir, [demo_packages["public_key"]]).get(model.id, model.version)
    assert again.state != ModelState.SHADOW
    assert [w["says"] for w in withdrawals.listed(restored.conn)] == [
        f"{model.id} {model.version} was withdrawn by the hub and no longer runs here (it was shadow)"]
    assert verify_database(restored) == []

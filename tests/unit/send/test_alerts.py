"""Outbound alerts (issue 23): a flagged result that could not be delivered and a drift
alert each reach a real HTTP webhook once, as JSON, and syslog once; a webhook that is
down gets the alert on a later run; each delivery is audited; events from before the
alerts table existed are not sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import db as db_module
from appliance.audit.chain import append, verify_database
from appliance.config import AlertSettings, load_settings
from appliance.db import MIGRATIONS, open_database
from appliance.errors import ConfigError
from appliance.outcome.upkeep import ALERTS, Upkeep
from appliance.send.alerts import Alerts
from tests.helpers.webhook import Webhook

NOW = 1_780_000_000.0


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


#: A floor no test machine reaches (1 PiB), and none at all.
UNREACHABLE, NO_FLOOR = 1 << 50, 0


def alerts_for(url: str, logged: list, data_dir=None, floor: int = NO_FLOOR) -> Alerts:
    return Alerts(AlertSettings(webhook_url=url, timeout_s=10), "TRIAGE", data_dir or Path("/"), floor,
                  log=logged.append)


def test_each_alert_reaches_the_webhook_and_syslog_once(tmp_path, webhook):
    db = open_database(tmp_path / "appliance.db")
    dead = append(db, "alert-result-dead-lettered", {"study_instance_uid": "1.2.3", "error": "refused"})
    append(db, "web-login", {"user": "rad"})  # not an alert
    drift = append(db, "drift-alert", {"model_id": "head-ct", "feature": "kernel"})
    logged: list = []
    alerts = alerts_for(webhook.url, logged)

    assert alerts.run(db.conn, NOW) == 2
    assert alerts.run(db.conn, NOW + 60) == 0  # nothing new: nothing sent again
    assert [(b["alert"], b["seq"], b["appliance"]) for b in webhook.bodies] == [
        ("alert-result-dead-lettered", dead, "TRIAGE"), ("drift-alert", drift, "TRIAGE")]
    assert webhook.bodies[0]["details"] == {"study_instance_uid": "1.2.3", "error": "refused"}
    assert [a.seq for a in logged] == [dead, drift]
    sent = db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'alert-sent' ORDER BY seq").fetchall()
    assert [json.loads(p)["seq"] for (p,) in sent] == [dead, drift]
    assert verify_database(db) == []


def test_a_webhook_that_is_down_gets_the_alert_later_and_syslog_hears_once(tmp_path, webhook):
    db = open_database(tmp_path / "appliance.db")
    seq = append(db, "drift-alert", {"model_id": "head-ct"})
    logged: list = []
    alerts = alerts_for(webhook.url, logged)
    webhook.down = True
    assert alerts.run(db.conn, NOW) == 0
    error = db.conn.execute("SELECT attempts, last_error, delivered_at FROM alerts WHERE seq = ?", (seq,)).fetchone()
    assert error[0] == 1 and "503" in error[1] and error[2] is None
    webhook.down = False
    assert alerts.run(db.conn, NOW + 60) == 1
    assert [b["seq"] for b in webhook.bodies] == [seq]
    assert len(logged) == 1


def test_events_from_before_the_upgrade_are_not_sent(tmp_path, webhook, monkeypatch):
    """The migration that made the table counts the existing events as delivered."""
    path = tmp_path / "appliance.db"
    alerts_migration = next(n for n, script in enumerate(MIGRATIONS) if "CREATE TABLE alerts" in script)
    with monkeypatch.context() as older:  # the schema of a release before alerts
        older.setattr(db_module, "MIGRATIONS", MIGRATIONS[:alerts_migration])
        db = open_database(path)
        old = append(db, "drift-alert", {"model_id": "head-ct"})
        db.conn.close()
    db = open_database(path)  # migrates
    assert alerts_for(webhook.url, []).run(db.conn, NOW) == 0
    assert webhook.bodies == []
    assert db.conn.execute("SELECT delivered_at FROM alerts WHERE seq = ?", (old,)).fetchone()[0] == 0


def test_the_disk_floor_alerts_once_per_episode(tmp_path, webhook):
    db = open_database(tmp_path / "appliance.db")
    logged: list = []
    low, fine = (alerts_for(webhook.url, logged, tmp_path, floor) for floor in (UNREACHABLE, NO_FLOOR))
    assert low.run(db.conn, NOW) == 1
    assert low.run(db.conn, NOW + 60) == 0  # still below: the same episode
    assert fine.run(db.conn, NOW + 120) == 0  # back above: recorded, not alerted
    assert low.run(db.conn, NOW + 180) == 1  # a new episode
    assert [b["alert"] for b in webhook.bodies] == ["alert-disk-below-floor"] * 2
    assert "below the floor (dicom.min_free_disk_mb" in webhook.bodies[0]["details"]["problem"]
    kinds = [k for (k,) in db.conn.execute("SELECT kind FROM audit_log WHERE kind LIKE '%floor' ORDER BY seq")]
    assert kinds == ["alert-disk-below-floor", "disk-above-floor", "alert-disk-below-floor"]


def test_a_bad_webhook_url_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"alerts\.webhook_url.*http:// or https://"):
        load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path), "APPLIANCE_ALERTS_WEBHOOK_URL": "ftp://x/y"})


def test_the_worker_upkeep_runs_the_alerts(tmp_path, webhook):
    db = open_database(tmp_path / "appliance.db")
    append(db, "drift-alert", {"model_id": "head-ct"})
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path)})
    upkeep = Upkeep(db, settings.drift, 3600, 3600, alerts=alerts_for(webhook.url, []))
    assert ALERTS in upkeep.run_due(NOW)
    assert len(webhook.bodies) == 1

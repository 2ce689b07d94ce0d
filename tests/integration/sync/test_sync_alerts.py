"""The sync's alerts (issue 23): a box whose rounds cannot reach its hub for
``sync.alert_after_s`` alerts once an episode, through the real alerts path to a real
webhook, and audits reaching the hub again; the hub finding the audit chain altered alerts
once, and its clearing is audited. Rounds run against a real hub process on a clock the
test moves (no waiting)."""

from __future__ import annotations

import json

import pytest

from appliance.config import AlertSettings
from appliance.db import open_database, transaction
from appliance.parts import Parts
from appliance.send.alerts import Alerts
from appliance.sync.round import RoundResult, enrol, run_round, watch
from tests.helpers.hub import box_settings
from tests.helpers.webhook import Webhook

T0 = 1_800_000_000.0
EPISODES = ("alert-sync-failing", "sync-reached-again", "alert-audit-disagrees", "audit-agrees-again")


def _episodes(conn) -> list[tuple[str, dict]]:
    marks = ", ".join("?" * len(EPISODES))
    rows = conn.execute(f"SELECT kind, payload FROM audit_log WHERE kind IN ({marks}) ORDER BY seq", EPISODES)
    return [(kind, json.loads(payload)) for kind, payload in rows]


@pytest.mark.parametrize("hub", ["sqlite"], indirect=True)
def test_a_hub_out_of_reach_for_the_set_time_alerts_once_and_reaching_it_again_is_audited(hub, tmp_path):
    settings = box_settings(tmp_path / "box", sync_alert_after_s="3600")
    enrol(settings, hub.url, hub.token(site="Site A"))
    registry = Parts(settings).registry()
    conn = registry.db.conn
    now = [T0]

    def round_at(t: float) -> RoundResult:
        now[0] = t
        return run_round(settings, registry, sleep=lambda _: None, clock=lambda: now[0])

    assert round_at(T0).metadata_refreshed
    hub.stop()
    assert not round_at(T0 + 600).metadata_refreshed
    assert _episodes(conn) == []  # out of reach for ten minutes: not yet a person's problem
    round_at(T0 + 3700)
    round_at(T0 + 7300)  # the same episode: not alerted again
    [(kind, failing)] = _episodes(conn)
    assert kind == "alert-sync-failing"
    assert failing["hub"] == hub.url and failing["hours_without"] == 1.0
    assert failing["last_reached"] == "2027-01-15T08:00:00Z"  # T0, the round that reached it
    assert "unreachable" in failing["error"]

    with Webhook() as webhook:
        alerts = Alerts(AlertSettings(webhook_url=webhook.url, timeout_s=10), "TRIAGE", settings.data_dir, 0,
                        log=lambda alert: None)
        assert alerts.run(conn, T0 + 7300) == 1
    [body] = webhook.bodies
    assert body["alert"] == "alert-sync-failing" and body["details"] == failing

    hub.start()
    assert round_at(T0 + 7400).metadata_refreshed
    assert [kind for kind, _ in _episodes(conn)] == ["alert-sync-failing", "sync-reached-again"]
    assert _episodes(conn)[-1][1] == {"hub": hub.url}


def test_the_hub_finding_the_audit_chain_altered_alerts_once_and_its_clearing_is_audited(tmp_path):
    conn = open_database(tmp_path / "appliance.db").conn
    conn.execute("INSERT INTO sync_rounds (started_at, finished_at, pushed, metadata_refreshed, staged) "
                 "VALUES (?, ?, 0, 1, '[]')", (T0, T0))
    problem = "the chain at seq 7 has another hash than the hub's anchor (rewritten and re-hashed)"
    said = [problem, problem, problem, None, "consistent"]  # kept at every check-in; an older hub says nothing
    for audit in said:
        with transaction(conn):
            watch(conn, RoundResult(metadata_refreshed=True, audit=audit), "https://hub", T0, 3600)
    assert _episodes(conn) == [
        ("alert-audit-disagrees", {"hub": "https://hub", "problem": problem}),
        ("audit-agrees-again", {"hub": "https://hub"}),
    ]

"""Issue 25's rollout controls against a real hub (SQLite and PostgreSQL): ``withdraw``
stops a release: a box running it in shadow drops it at its next round, a box where a
person activated it keeps it active and says so in ``sync status``, and a box enrolled
later is not offered it; ``devices set-ring`` moves a box, which follows at its next
check-in."""

from __future__ import annotations

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.sync.identity import Enrolment
from appliance.sync.round import enrol, run_round, status
from tests.helpers.hub import SHIPPED, box_settings, CHEST_LABEL, CHEST_PACKAGE, CHEST_VERSION

CHEST = CHEST_PACKAGE
LABEL = CHEST_LABEL


def _box(hub, tmp_path, name: str, ring: str = "all"):
    settings = box_settings(tmp_path / name)
    enrol(settings, hub.url, hub.token(site=name, ring=ring))
    return settings


def _round(settings):
    return run_round(settings, Parts(settings).registry(), sleep=lambda _: None)


def _states(settings) -> list[tuple[str, str, str]]:
    registry = ModelRegistry(open_database(settings.db_path), settings.models_dir, [])
    return [(m.id, m.version, m.state) for m in registry.models()]


def test_withdraw_drops_shadow_tells_active_and_set_ring_is_followed(hub, tmp_path):
    a, b = _box(hub, tmp_path, "box-a"), _box(hub, tmp_path, "box-b")
    assert "published" in hub.publish(CHEST)
    for box in (a, b):
        assert _round(box).staged == [LABEL]
    Parts(b).registry().activate("chest-cr-pneumothorax-demo", CHEST_VERSION, "biomed-b")  # a person's decision

    told = hub.admin("withdraw", "chest-cr-pneumothorax-demo", CHEST_VERSION)
    assert f"withdrew {CHEST.name}" in told.stdout
    for moved in (hub.admin("promote", "chest-cr-pneumothorax-demo", CHEST_VERSION, check=False),
                  hub.admin("demote", "chest-cr-pneumothorax-demo", CHEST_VERSION, "--reason", "x", check=False)):
        assert moved.returncode == 2, moved.stdout + moved.stderr  # a withdrawn release is in no ring to move
        assert f"{CHEST_VERSION} was withdrawn: it is in no ring to move" in moved.stderr

    assert _round(a).withdrawn == [LABEL]
    assert _states(a) == [("chest-cr-pneumothorax-demo", CHEST_VERSION, "retired")]
    assert _round(b).withdrawn == []
    assert _states(b) == [("chest-cr-pneumothorax-demo", CHEST_VERSION, "active")]  # activation stays a person's
    said = {name: status(box)["withdrawn"] for name, box in (("a", a), ("b", b))}
    assert [w["says"] for w in said["a"]] == [f"{LABEL} was withdrawn by the hub and no longer runs here "
                                              "(it was shadow)"]
    assert [w["says"] for w in said["b"]] == [f"{LABEL} was withdrawn by the hub and is still active here: "
                                              "activate another version or roll back (a person's decision)"]
    assert _round(a).withdrawn == [] and len(status(a)["withdrawn"]) == 1  # acted on once
    audit = open_database(a.db_path).conn.execute(
        "SELECT kind FROM audit_log WHERE kind IN ('model-withdrawn', 'release-withdrawn') ORDER BY seq").fetchall()
    assert [k for (k,) in audit] == ["model-withdrawn", "release-withdrawn"]

    # No longer offered: a box enrolled now stages nothing.
    c = _box(hub, tmp_path, "box-c")
    assert _round(c).staged == [] and _states(c) == []
    page = hub.fleet_page()
    assert f"{CHEST_LABEL} (retired)" in page and f"{CHEST_LABEL} (active)" in page

    # An operator moves box A to the pilot ring; it follows at its next check-in.
    device_a = Enrolment.load(a.data_dir).device_id
    moved = hub.admin("devices", "set-ring", device_a, "pilot")
    assert "moves to ring pilot" in moved.stdout
    assert Enrolment.load(a.data_dir).ring == "all"
    _round(a)
    assert Enrolment.load(a.data_dir).ring == "pilot"
    assert status(a)["enrolment"]["ring"] == "pilot"
    refused = hub.admin("devices", "set-ring", device_a, "everyone", check=False)
    assert refused.returncode == 2 and "ring 'everyone': must be one of pilot, all" in refused.stderr

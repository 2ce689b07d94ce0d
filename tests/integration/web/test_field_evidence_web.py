"""Field evidence from results the real worker recorded: a model version that ran as the
active model and later in shadow reports both roles, with nothing that names a patient; a
radiologist's verdict given through the study page's form counts for both models that
judged the series; a withdrawn release that is active here is named on the models page."""

from __future__ import annotations

import datetime as dt
import html
import json
import time

from appliance.config import DriftSettings
from appliance.drift.anonymised import daily_report
from appliance.drift.evidence import evidence
from appliance.drift.service import day_of
from appliance.models.registry import ModelRegistry
from appliance.sync import withdrawals
from tests.helpers.boxes import session_client


def test_real_results_report_each_role_and_a_withdrawn_active_release_is_named(box):
    conn = box.db().conn
    registry = ModelRegistry(box.db(), box.settings.models_dir, [])
    by_version = {m.version: m for m in registry.models()}
    model_id = by_version["1.0.0"].id
    today = day_of(time.time())

    # 1.0.0 (threshold 0: flags everything) was active for the first studies, then shadowed
    # 1.1.0 (threshold 1: flags nothing) on the next one.
    roles = {e.role.value: e for e in evidence(conn, model_id, "1.0.0", today)}
    assert set(roles) == {"active", "shadow"}
    assert roles["shadow"].agreement == {"both": 0, "shadow_only": 1, "active_only": 0, "neither": 0}
    report = daily_report(conn, DriftSettings(k=2), today, model=(model_id, "1.0.0"))
    entry = report["models"][0]["field"]
    assert {role: stats["first_day"] for role, stats in entry.items()} == {"active": today.isoformat(),
                                                                           "shadow": today.isoformat()}
    text = json.dumps(report)
    for name in ("P-SCRIPT", "P-IMG", "A100", "A103", "ED_CT", box.studies["flagged"], box.series["flagged"]):
        assert name not in text

    # A verdict through the form: the flagged series, judged a false positive, counts as a
    # flag disagreed with for 1.0.0, which flagged it as the active model.
    client, csrf = session_client(box, "rad")
    answer = client.post(f"/studies/{box.studies['flagged']}/feedback",
                         data={"series_uid": box.series["flagged"], "verdict": "false-positive", "csrf": csrf})
    assert answer.status_code in (200, 303), answer.text
    active = {e.role.value: e for e in evidence(conn, model_id, "1.0.0", today)}["active"]
    assert active.feedback == {"flag_agreed": 0, "flag_disagreed": 1, "missed_finding": 0}
    tomorrow = today + dt.timedelta(days=1)
    assert daily_report(conn, DriftSettings(k=2), tomorrow, model=(model_id, "1.0.0"))["models"] == []

    # The hub withdraws 1.1.0, active here: it stays active and the models page says so.
    assert withdrawals.apply(conn, registry, [{"model_id": model_id, "version": "1.1.0"}]) == []
    assert registry.get(model_id, "1.1.0").state == "active"
    bio, _ = session_client(box, "bio")
    page = html.unescape(bio.get("/admin/models").text)
    assert (f"{model_id} 1.1.0 was withdrawn by the hub and is still active here: activate another version or "
            "roll back (a person's decision)") in page

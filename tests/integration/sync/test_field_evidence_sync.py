"""Issue 25: two boxes and a real hub over sockets (SQLite and PostgreSQL). A release is in
shadow on both; their daily reports carry agreement and radiologists' verdicts; the hub's
release page shows the numbers a reader needs, suppressed cells as the ranges they allow;
``promote`` is refused while the evidence is short and allowed once it is (clock
injected: each box queues the days closed before an injected today); a report of the old
schema is still accepted."""

from __future__ import annotations

import datetime as dt
import html
import re

import httpx

from appliance.db import open_database
from appliance.models.package import verify_package
from appliance.sync.client import HubClient, http_client
from appliance.sync.identity import Enrolment, load_or_create_key
from appliance.sync.report_queue import queue_closed_days
from appliance.sync.round import RoundResult, enrol, push_reports
from tests.helpers.field import Case, record_cases
from tests.helpers.hub import HEAD_PACKAGE, HEAD_VERSION, box_settings, make_report
from training.hub.releases import expected_flag_interval, expected_not_analysed, wilson
from training.hub.repository import Repository

DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MODEL, ACTIVE, SHADOW = "head-ct-ich-demo", "1.0.0", HEAD_VERSION
# Each day on each box: 10 flagged by both (5 agreed with), 2 by the active model only (both
# called false positives), 2 by the shadow only (the radiologist agreed with the active
# model's negative: the shadow's flags were false), 46 by neither; 4 waited 90 s for their
# result, the rest 20 s.
DAY_CASES = ([Case(0.9, 0.9, 90.0 if i < 4 else 20.0, "agree" if i < 5 else None) for i in range(10)]
             + [Case(0.7, 0.3, 20.0, "false-positive") for _ in range(2)]
             + [Case(0.1, 0.7, 20.0, "agree") for _ in range(2)]
             + [Case(0.1, 0.1, 20.0) for _ in range(46)])


def _box(hub, tmp_path, site: str):
    settings = box_settings(tmp_path / site.replace(" ", "-"))
    enrol(settings, hub.url, hub.token(ring="pilot", site=site))
    job = 1
    for day in range(9):
        job = record_cases(settings.db_path, DAY_CASES, at=(DAY0 + dt.timedelta(days=day, hours=9)).timestamp(),
                           job0=job, model_id=MODEL, active=ACTIVE, shadow=SHADOW)
    return settings


def _sync(settings, hub, today: dt.date, alerts: list[dict] | None = None) -> None:
    """What a round does, with today injected: queue the closed days, push them, check in."""
    device_id = Enrolment.load(settings.data_dir).device_id
    conn = open_database(settings.db_path).conn
    queue_closed_days(conn, settings.drift, device_id, today)
    with http_client(hub.url, 20) as http:
        client = HubClient(http, device_id, load_or_create_key(settings.data_dir))
        result = RoundResult()
        push_reports(conn, client, settings, result, sleep=lambda _: None)
        assert result.push_error is None and result.rejected == 0, result
        client.post("/v1/checkin", {
            "appliance_version": "0.1.0", "metadata_refreshed_at": None, "release_error": None,
            "models": [{"model_id": MODEL, "version": ACTIVE, "state": "active"},
                       {"model_id": MODEL, "version": SHADOW, "state": "shadow"}],
            "drift_alerts": alerts or []})
    conn.close()


def _page(hub) -> str:
    operator = hub.admin("operator-token", "--name", "tests").stdout.strip().splitlines()[-1]
    answer = httpx.get(f"{hub.url}/releases", headers={"Authorization": f"Bearer {operator}"})
    assert answer.status_code == 200
    assert httpx.get(f"{hub.url}/releases").status_code == 401
    return answer.text


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _cell(section: str, row_class: str, cell_class: str) -> str:
    row = re.search(rf'<tr class="{row_class}">(.*?)</tr>', section, re.S).group(1)
    return _text(re.search(rf'<td class="{cell_class}">(.*?)</td>', row, re.S).group(1))


def _section(page: str) -> str:
    return re.search(rf'<section class="release" id="{MODEL}-{SHADOW}.tar">(.*?)</section>', page, re.S).group(1)


def _promote(hub, *extra: str):
    return hub.admin("promote", MODEL, SHADOW, "--min-boxes", "2", *extra, check=False)


def test_a_release_in_shadow_on_two_boxes_is_promoted_on_field_evidence(hub, tmp_path):
    hub.publish(HEAD_PACKAGE, ring="pilot")
    a, b = _box(hub, tmp_path, "Site A"), _box(hub, tmp_path, "Site B")

    # Three days in: too few days in shadow, and the agreement not yet shown to be high enough.
    for box in (a, b):
        _sync(box, hub, (DAY0 + dt.timedelta(days=3)).date())
    refused = _promote(hub)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "refused: 0 boxes with >= 7 days in shadow (Site A 3 d, Site B 3 d); needs 2" in refused.stdout
    # to date per box: 30 + 138 agreed, 6 and 6 disagreeing, under k, each counted at k-1 = 9
    assert "refused: agreement 0.903 over 336 series (4 cells under k counted at worst); needs >= 0.95" \
        in refused.stdout
    assert f"refused: {MODEL}-{SHADOW}.tar stays in ring pilot" in refused.stdout

    # Nine days in, but Site A's monitor alerts on the release: still refused, saying so.
    for box, alerts in ((a, [{"model_id": MODEL, "version": SHADOW, "feature": "kernel"}]), (b, [])):
        _sync(box, hub, (DAY0 + dt.timedelta(days=9)).date(), alerts)
    page = _section(_page(hub))
    assert _text(re.search(r"<p>Ring(.*?)</p>", page, re.S).group(0)).startswith(
        "Ring pilot. In shadow on 2 boxes, active on 0.")
    assert "Site A: kernel" in _text(page)
    rows = re.findall(r'<tr class="box">(.*?)</tr>', page, re.S)
    assert [(_text(re.search(r'class="site">(.*?)<', r).group(1)), _text(re.search(r'class="days">(.*?)<', r).group(1)),
             _text(re.search(r'class="agreement">(.*?)</td>', r, re.S).group(1))) for r in rows] == [
        # to date per box, as published in steps of k: 90 + 414 agreed, 10 + 10 not
        ("Site A", "9", "0.962 of 524 series"), ("Site B", "9", "0.962 of 524 series")]
    assert _cell(page, "role-shadow", "agreement") == "0.962"
    # Local PPV of the shadow, judged by the verdicts on the same series: 2 x 40 flags agreed
    # with, 2 x 10 false (published to date in steps of k).
    low, high = wilson(80, 100)
    assert _cell(page, "role-shadow", "ppv") == "0.800"
    assert _cell(page, "role-shadow", "ppv-interval") == f"{low:.3f}-{high:.3f}"
    # No missed finding was reported: a null (under k) on each box, shown as what it allows.
    assert _cell(page, "role-shadow", "missed") == "0 to 18"
    assert _cell(page, "role-shadow", "flag-rate") == "20.0 %"
    shipped = verify_package(HEAD_PACKAGE, None)
    bound = expected_not_analysed(shipped)  # the card's mixed stream, where the package carries it
    assert _cell(page, "role-shadow", "not-analysed") == "0.0 %" + (
        "" if bound is None else f" (card: at most {100 * bound:.1f} %)")
    assert _cell(page, "role-shadow", "ttr") == "21 s / 91 s"
    assert 'class="role-active"' not in page  # the shipped version never ran as the active model
    expected = expected_flag_interval(shipped)
    flag_expected = _cell(page, "role-shadow", "flag-expected")
    if expected is None:
        assert flag_expected == "the card gives no interval"
    else:
        assert flag_expected.startswith(f"{100 * expected[0]:.1f} % to {100 * expected[1]:.1f} %: ")
    refused = _promote(hub)
    assert refused.returncode == 3 and "refused: drift alerts: Site A: kernel" in refused.stdout, refused.stdout

    # The alert clears: every check holds, the release moves to the next ring, signed.
    _sync(a, hub, (DAY0 + dt.timedelta(days=9)).date())
    promoted = _promote(hub)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "holds: 2 boxes with >= 7 days in shadow (Site A 9 d, Site B 9 d); needs 2" in promoted.stdout
    assert "holds: agreement 0.962 over 1048 series; needs >= 0.95" in promoted.stdout
    source = "the default: the card gives no bound" if bound is None else "the card's mixed stream, upper 95 % bound"
    assert f"holds: not-analysed rate 0.0 %; needs <= {100 * (bound or 0.05):.3g} % ({source})" in promoted.stdout
    assert f"promoted {MODEL}-{SHADOW}.tar: ring pilot -> all" in promoted.stdout
    custom = Repository(hub.data_dir).load("targets").signed.targets[f"{MODEL}-{SHADOW}.tar"].custom
    assert custom["ring"] == "all"
    page = _section(_page(hub))
    assert "Ring all." in _text(page)
    decisions = _text(re.search(r'<ul class="decisions">(.*?)</ul>', page, re.S).group(1))
    assert decisions.count("pilot to all: refused") == 2 and "pilot to all: promoted (every check held)" in decisions

    # A problem found later: an operator moves it back to pilot, with the reason kept.
    demoted = hub.admin("demote", MODEL, SHADOW, "--reason", "flags doubled at Site C", check=False)
    assert demoted.returncode == 0, demoted.stdout + demoted.stderr
    assert f"demoted {MODEL}-{SHADOW}.tar: ring all -> pilot (flags doubled at Site C)" in demoted.stdout
    custom = Repository(hub.data_dir).load("targets").signed.targets[f"{MODEL}-{SHADOW}.tar"].custom
    assert custom["ring"] == "pilot"
    page = _section(_page(hub))
    assert "Ring pilot." in _text(page)
    assert "all to pilot: demoted by an operator (flags doubled at Site C)" in _text(page)
    again = hub.admin("demote", MODEL, SHADOW, "--reason", "x", check=False)
    assert again.returncode == 2 and "already in the first ring (pilot)" in again.stderr

    # Nothing under k reached the hub, and an old-schema report is still taken.
    db = hub.database()
    try:
        cells = db.rows("SELECT scored, flagged, both_flagged, shadow_only, active_only, neither_flagged, "
                        "flag_agreed, flag_disagreed, missed_finding FROM report_field")
    finally:
        db.close()
    assert len(cells) == 2 * 9 * 2 and all(c is None or c >= 10 for row in cells for c in row)
    device_id = Enrolment.load(a.data_dir).device_id
    with http_client(hub.url, 20) as http:
        client = HubClient(http, device_id, load_or_create_key(a.data_dir))
        old = make_report(day="2026-11-20")
        answer = client.post("/v1/reports", {"reports": [{"report": old, "audit_head": {"seq": 1, "hash": "a" * 64}}]})
    assert answer["results"] == [{"report_id": old["report_id"], "status": "accepted"}]

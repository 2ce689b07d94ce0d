"""The report envelope refuses anything outside its closed shape, naming the field."""

from __future__ import annotations

import copy
import uuid

import pytest

from appliance.drift.schema import SCHEMA, SCHEMA_V1, check_report
from appliance.errors import ApplianceError, ReportError


def _valid() -> dict:
    return {
        "schema": SCHEMA,
        "report_id": uuid.uuid4().hex,
        "day": "2026-11-27",
        "appliance_version": "0.1.0",
        "k": 10,
        "noise_epsilon": None,
        "models": [
            {
                "model_id": "head-ct",
                "model_version": "1.0.0",
                "series": 42,
                "flagged": None,
                "not_analysed": {"no-pixels": None, "decode-error": 11},
                "features": {
                    "hu": {"kind": "histogram", "edges": [-1000.0, 0.0, 1000.0], "counts": [30, None]},
                    "manufacturer_model": {"kind": "categorical", "counts": {"ACME CT 64": 31}},
                },
                "field": {"shadow": _role()},
            }
        ],
    }


def _role() -> dict:
    return {
        "first_day": "2026-11-20",
        "scored": 42,
        "flagged": None,
        "not_analysed": {"timed-out": None},
        "score_histogram": {"edges": [0.0, 0.5, 1.0], "counts": [35, None]},
        "time_to_result_s": {"p50": 41.5, "p95": 120.0},
        "agreement": {"both": None, "shadow_only": None, "active_only": None, "neither": 36},
        "feedback": {"flag_agreed": 12, "flag_disagreed": None, "missed_finding": None},
    }


def _field(r: dict) -> dict:
    return r["models"][0]["field"]["shadow"]


def test_valid_report_passes():
    check_report(_valid())
    r = _valid()
    r["noise_epsilon"] = 1.0
    r["models"] = []
    check_report(r)


@pytest.mark.parametrize(
    "mutate, path",
    [
        (lambda r: r.update(extra=1), "report.extra: unknown key"),
        (lambda r: r.pop("k"), "report.k: missing"),
        (lambda r: r.update(schema="other/1"), "schema"),
        (lambda r: r.update(report_id="not-a-uuid"), "report_id"),
        (lambda r: r.update(day="2026-11-27T10:00"), "day"),
        (lambda r: r.update(day="2026-02-30"), "day"),
        (lambda r: r.update(noise_epsilon="high"), "noise_epsilon"),
        (lambda r: r["models"][0].update(patient="DOE^JOHN"), "models[0].patient: unknown key"),
        (lambda r: r["models"][0].update(model_version="1.0.0-John Doe"), "models[0].model_version"),
        (lambda r: r["models"][0].update(series=9), "models[0].series: 9 is below k=10"),
        (lambda r: r["models"][0].update(flagged=True), "models[0].flagged: must be an integer"),
        (lambda r: r["models"][0]["not_analysed"].update({"1.2.840.99/x": 20}), "models[0].not_analysed: key"),
        (lambda r: r["models"][0]["features"]["hu"]["counts"].__setitem__(1, 3), "models[0].features.hu.counts[1]"),
        (lambda r: r["models"][0]["features"]["hu"].update(min=-3024), "models[0].features.hu.min: unknown key"),
        (lambda r: r["models"][0]["features"]["hu"]["edges"].__setitem__(1, -2000.0), "models[0].features.hu.edges[1]"),
        (lambda r: r["models"][0]["features"]["hu"]["counts"].append(12), "models[0].features.hu.counts"),
        (lambda r: r["models"][0]["features"]["manufacturer_model"]["counts"].update({"SN: 12/34": 50}),
         "models[0].features.manufacturer_model.counts: key"),
        (lambda r: r["models"][0]["features"]["manufacturer_model"]["counts"].update({"Mobile Unit 7": None}),
         "models[0].features.manufacturer_model.counts.Mobile Unit 7: a category under k must be left out"),
        (lambda r: r["models"][0]["features"]["manufacturer_model"].update(kind="text"),
         "models[0].features.manufacturer_model.kind"),
        (lambda r: r["models"][0]["features"].update({"": {"kind": "categorical", "counts": {}}}), "models[0].features: key"),
        (lambda r: r["models"][0].pop("field"), "models[0].field: missing"),
        (lambda r: r["models"][0]["field"].update(retired=_role()), "models[0].field.retired: unknown role"),
        (lambda r: _field(r).update(scored=4), "models[0].field.shadow.scored: 4 is below k=10"),
        (lambda r: _field(r).update(first_day="2026-11-28"), "models[0].field.shadow.first_day: after"),
        (lambda r: _field(r).update(site="St Elsewhere"), "models[0].field.shadow.site: unknown key"),
        (lambda r: _field(r)["feedback"].update(flag_disagreed=2), "models[0].field.shadow.feedback.flag_disagreed: 2"),
        (lambda r: _field(r)["agreement"].update(both=1), "models[0].field.shadow.agreement.both: 1 is below"),
        (lambda r: _field(r)["agreement"].pop("neither"), "models[0].field.shadow.agreement.neither: missing"),
        (lambda r: _field(r)["score_histogram"]["counts"].__setitem__(1, 9),
         "models[0].field.shadow.score_histogram.counts[1]: 9"),
        (lambda r: _field(r)["time_to_result_s"].update(p95="slow"), "models[0].field.shadow.time_to_result_s.p95"),
        (lambda r: _field(r)["time_to_result_s"].update(p99=3.0), "time_to_result_s.p99: unknown key"),
        (lambda r: r.update(schema=SCHEMA_V1), "models[0].field: unknown key"),
    ],
)
def test_each_rule_names_the_field(mutate, path):
    r = _valid()
    mutate(r)
    with pytest.raises(ReportError, match=None) as info:
        check_report(r)
    assert path in str(info.value)
    assert isinstance(info.value, ApplianceError)


def test_a_first_version_report_still_passes():
    r = _valid()
    r["schema"] = SCHEMA_V1
    del r["models"][0]["field"]
    check_report(r)
    assert SCHEMA == "triage-drift-report/2"


def test_check_does_not_modify_the_report():
    r = _valid()
    before = copy.deepcopy(r)
    check_report(r)
    assert r == before

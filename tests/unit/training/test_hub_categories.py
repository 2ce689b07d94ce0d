"""The hub keeps a drift category label only when it is on the allow-list (hostile cases
D2-hub-holds-labels and H9-report-schema: the hub stored and showed 'DOE JOHN MRN 4455667'
as a Manufacturer category)."""

from __future__ import annotations

import json

import pytest

from training.hub import categories
from training.hub.service import Device, take_reports
from training.hub.store import HubDatabase
from tests.helpers.hub import make_report

HEAD = {"seq": 1, "hash": "0" * 64}
IDENTIFYING = "DOE JOHN MRN 4455667"


def _report() -> dict:
    return make_report(
        features={
            "manufacturer_model": {
                "kind": "categorical",
                "counts": {IDENTIFYING: 12, "ACME Scan 64": 15, "unknown": 10},
            },
            "body_part": {"kind": "categorical", "counts": {"HEAD": 30, "PATIENT 19700101": 10}},
            "hu_mean": {"kind": "histogram", "edges": [0.0, 40.0, 80.0], "counts": [25, 15]},
        }
    )


@pytest.fixture
def db(tmp_path):
    hub = HubDatabase(str(tmp_path / "hub.db"))
    yield hub
    hub.close()


def test_labels_not_on_the_allow_list_are_never_stored_their_counts_go_to_other(db):
    """Before: the hub stored every label that matched the label pattern."""
    device = Device("d" * 32, "Site", "all")
    results = take_reports(db, device, {"reports": [{"report": _report(), "audit_head": HEAD}]}, 1000.0)
    assert results == [{"report_id": results[0]["report_id"], "status": "accepted", "withheld": 3}]
    stored = db.rows("SELECT body FROM reports")[0][0] + db.rows("SELECT features FROM report_models")[0][0]
    assert IDENTIFYING not in stored and "PATIENT" not in stored and "ACME" not in stored
    features = json.loads(db.rows("SELECT features FROM report_models")[0][0])
    assert features["manufacturer_model"]["counts"] == {"other": 27, "unknown": 10}
    assert features["body_part"]["counts"] == {"HEAD": 30, "other": 10}
    assert features["hu_mean"]["counts"] == [25, 15]


def test_an_operator_allowed_label_is_kept(db):
    assert categories.allow(db, "manufacturer_model", "ACME Scan 64")
    assert not categories.allow(db, "manufacturer_model", "ACME Scan 64")  # already
    device = Device("d" * 32, "Site", "all")
    results = take_reports(db, device, {"reports": [{"report": _report(), "audit_head": HEAD}]}, 1000.0)
    assert results[0]["withheld"] == 2
    features = json.loads(db.rows("SELECT features FROM report_models")[0][0])
    assert features["manufacturer_model"]["counts"] == {"ACME Scan 64": 15, "other": 12, "unknown": 10}


def test_allowing_refuses_what_no_box_sends():
    with pytest.raises(ValueError, match="feature 'patient_name'"):
        categories.allow(None, "patient_name", "X")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a label a box sends"):
        categories.allow(None, "kernel", "<b>")  # type: ignore[arg-type]


def test_screen_leaves_the_report_it_was_given_as_it_was():
    report = _report()
    before = json.dumps(report, sort_keys=True)
    screened, withheld = categories.screen(report, categories.DEFAULTS)
    assert json.dumps(report, sort_keys=True) == before and withheld == 3
    assert screened["models"][0]["features"]["body_part"]["counts"] == {"HEAD": 30, "other": 10}

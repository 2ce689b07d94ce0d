"""The SR as the study page shows it (:func:`appliance.web.results.sr_lines`): read from
the file sent to PACS, numbers as a person reads them."""

from __future__ import annotations

import re

from appliance.report import ResultUids, build_sr
from appliance.web.results import sr_lines
from tests.helpers.series import ct_series, header_only
from tests.helpers.sr import DEVICE_UID, decision, write


def shown(tmp_path, **overrides) -> dict[str, str]:
    sr = build_sr([header_only(ct_series(1)[0])], decision(**overrides), ResultUids.from_key("k"),
                  device_uid=DEVICE_UID)
    return {name: value for _, name, value in sr_lines(write(sr, tmp_path / "sr.dcm"))}


def test_the_score_and_the_operating_point_read_with_three_decimals_and_no_unit(tmp_path):
    """Issue 26: the page read "Score 0.999116… 1", the UCUM unit "1" (no units) after the number."""
    lines = shown(tmp_path, score=0.999116287, threshold=0.5)
    assert lines["Score"] == "0.999"
    assert re.fullmatch(r"0\.\d{3}", lines["Score"])
    assert lines["CAD Operating Point"] == "0.500"


def test_a_score_rounds_rather_than_cuts(tmp_path):
    assert shown(tmp_path, score=0.87654)["Score"] == "0.877"

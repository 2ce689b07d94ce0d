from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import DEFAULT_CONFIG_PATH
from appliance.jobs import SeriesFacts
from appliance.triage.routing import load_routing
from appliance.errors import ConfigError

ROUTING = load_routing(DEFAULT_CONFIG_PATH.parent / "routing.toml")
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_head_ct_and_chest_radiographs_go_to_their_models():
    rule, why = ROUTING.route(SeriesFacts("CT", "HEAD", CT, "Head non-contrast", ("ORIGINAL", "AXIAL"), 200))
    assert (rule.model, why) == ("head-ct-ich-demo", "")
    rule, _ = ROUTING.route(SeriesFacts("DX", "CHEST", "1.2.840.10008.5.1.4.1.1.1.1", instances=1))
    assert rule.model == "chest-cr-pneumothorax-demo"


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (SeriesFacts("MR", "HEAD", "1.2.840.10008.5.1.4.1.1.4", instances=30),
         "no routing rule takes modality MR (they take CT, CR or DX)"),
        (SeriesFacts("CT", "CHEST", CT, instances=200), "head CT: body part CHEST, not HEAD, BRAIN or SKULL"),
        (SeriesFacts("CT", "HEAD", CT, instances=3), "no routing rule matched (head CT: 3 images; it takes 8 to 2000)"),
        (SeriesFacts("CT", "", CT, instances=50), "head CT: body part missing"),
    ],
)
def test_a_series_no_rule_takes_is_told_why(facts, reason):
    rule, why = ROUTING.route(facts)
    assert rule is None and why.startswith("no routing rule") and reason in why
    assert "chest radiograph" not in why  # only the rules that got furthest: the chest rule wants CR or DX
    assert "[" not in why and "'" not in why  # sentences, not Python lists (issue 26)


def test_priority_rules_raise_emergency_senders():
    assert ROUTING.priority_of(SeriesFacts("CT", calling_ae="ED_CT")) == 10
    assert ROUTING.priority_of(SeriesFacts("CT", calling_ae="OUTPATIENT")) == 0


def test_a_bad_rule_names_itself(tmp_path: Path):
    path = tmp_path / "routing.toml"
    path.write_text('[[rule]]\nname = "x"\nmodel = "m"\nmodality = ["CT"]\nseries_description = "(("\n')
    with pytest.raises(ConfigError, match="rule.0.series_description"):
        load_routing(path)
    path.write_text('[[rule]]\nname = "x"\nmodel = "m"\nmodality = []\n')
    with pytest.raises(ConfigError, match="rule.0.modality"):
        load_routing(path)


def test_shipped_rules_report_real_procedure_codes():
    codes = {rule.name: rule.procedure_code for rule in ROUTING.rule}
    assert codes == {"head CT": ("24725-4", "LN", "Head CT"),
                     "chest radiograph": ("399208008", "SCT", "Plain chest X-ray")}


@pytest.mark.parametrize("line, message", [
    ('procedure_code = ["24725-4", "LN"]', "rule.0.procedure_code"),
    ('procedure_code = ["24725-4", "", "Head CT"]', "rule.0.procedure_code"),
    ("series_timeout_s = 0", "rule.0.series_timeout_s"),
])
def test_a_bad_procedure_code_or_timeout_names_its_key(tmp_path: Path, line, message):
    path = tmp_path / "routing.toml"
    path.write_text(f'[[rule]]\nname = "x"\nmodel = "m"\nmodality = ["CT"]\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_routing(path)

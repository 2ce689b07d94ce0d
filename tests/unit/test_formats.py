"""One precision per quantity and one spelling (appliance.formats), as the pages, the SR's
text and the commands write them."""

from __future__ import annotations

import math

import pytest

from appliance import formats


@pytest.mark.parametrize(("value", "text"), [
    (0.15859444904126, "0.159"), (0.1581, "0.158"), (1.0, "1.000"), (0.0, "0.000"), (None, "—"), (math.nan, "—"),
])
def test_a_score_or_threshold_has_three_decimals(value, text):
    assert formats.score(value) == text


def test_a_score_just_under_its_threshold_does_not_read_as_the_threshold():
    assert formats.score(0.1581) != formats.score(0.15859444904126)


@pytest.mark.parametrize(("call", "text"), [
    (lambda: formats.score_diff(0.0123), "+0.012"),
    (lambda: formats.score_diff(-0.3), "-0.300"),
    (lambda: formats.percent(0.125), "12.5 %"),
    (lambda: formats.percent(1.0), "100.0 %"),
    (lambda: formats.rate(3.5833), "3.6"),
    (lambda: formats.load(17.4), "17.40"),
    (lambda: formats.statistic(0.200812), "0.2008"),
    (lambda: formats.statistic(1.23e-5), "1.23e-05"),
    (lambda: formats.ms(6.329127), "6.33 ms"),
    (lambda: formats.seconds(5.0102), "5.01 s"),
    (lambda: formats.seconds(20.1202), "20 s"),
    (lambda: formats.volume_ml(12.54), "12.5 mL"),
    (lambda: formats.gib(24_266_211_328), "22.6 GiB"),
    (lambda: formats.number(7), "7"),
    (lambda: formats.number(0.123456), "0.1235"),
    (lambda: formats.duration(3.21), "3.2 s"),
    (lambda: formats.duration(200), "3 min 20 s"),
    (lambda: formats.count(1, "site"), "1 site"),
    (lambda: formats.count(2, "site"), "2 sites"),
])
def test_each_quantity_has_one_precision(call, text):
    assert call() == text


@pytest.mark.parametrize(("key", "value", "text"), [
    ("threshold", 0.15859444904126, "0.159"), ("score", 0.88183763869612, "0.882"),
    ("score_difference", -0.0123, "-0.012"), ("decode_s", 0.9533, "0.95 s"), ("output_s", 6.234, "6.23 s"),
    ("ms_per_image", 10.771395, "10.77 ms"), ("flag_agreement", 0.75, "75.0 %"), ("iph_volume_ml", 3.25, "3.2 mL"),
    ("job_id", 6, "6"), ("series_diff", 0.000105330, "0.0001053"), ("score_diff", 5.96e-08, "5.96e-08"),
])
def test_a_stored_number_is_written_by_what_its_key_names(key, value, text):
    assert formats.by_key(key, value) == text


@pytest.mark.parametrize(("text", "spelt"), [
    ("Intracranial hemorrhage", "Intracranial haemorrhage"),
    ("intracranial haemorrhage (subdural)", "intracranial haemorrhage (subdural)"),
    ("HEMORRHAGE", "HAEMORRHAGE"),
    ("subdural hematoma", "subdural haematoma"),
    ("pneumothorax", "pneumothorax"),
])
def test_a_finding_has_one_spelling(text, spelt):
    assert formats.finding(text) == spelt

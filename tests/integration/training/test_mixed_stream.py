"""The mixed-stream check: a signed package installed on a real appliance that receives a
fresh stream over DICOM, and the card's sentence about it."""

from __future__ import annotations

import csv
from dataclasses import replace

import pydicom

from training.card import mixed_stream_text
from training.data.ct_synth import CT_EXTERNAL_STYLE
from training.demo import head_ct
from training.mixed_stream import STREAM_PREVALENCE, mixed_stream_through_appliance, stream_config


def test_stream_config_keeps_the_generator_but_mixes_every_thickness():
    generator = head_ct().generator
    config = stream_config(generator, 50, seed=7)
    assert (config.n_patients, config.seed, config.positive_fraction) == (50, 7, STREAM_PREVALENCE)
    assert config.thickness_weights is None and config.thicknesses_mm == generator.thicknesses_mm
    assert (config.matrix, config.fov_mm, config.coverage_mm) == (generator.matrix, generator.fov_mm, generator.coverage_mm)


def test_a_quick_package_on_a_real_appliance_reports_what_it_flagged(tmp_path, quick_packages, monkeypatch):
    # As scripts/build-demo-models runs it: without the test session's allowance to run on a
    # plain disk (the build's scratch box brings its own).
    monkeypatch.delenv("APPLIANCE_ALLOW_UNENCRYPTED", raising=False)
    spec = replace(head_ct(quick=True), mixed_stream_series=8, mixed_stream_seed=99)
    report = mixed_stream_through_appliance(quick_packages["head-ct"], quick_packages["public_key"], spec,
                                            tmp_path / "box", tmp_path / "datasets", log=lambda line: None)
    stream = next((tmp_path / "datasets").iterdir())
    with open(stream / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scanners = {f"{ds.Manufacturer} {ds.ManufacturerModelName}" for ds in
                (pydicom.dcmread(p, stop_before_pixels=True) for p in stream.glob("*/CT/IM0001.dcm"))}
    assert report["series"] == len(rows) == 8 and report["positives"] == sum(r["label"] == "1" for r in rows)
    assert CT_EXTERNAL_STYLE in scanners and len(scanners) == 4  # the held-out scanner is in the stream
    assert sum(report["states"].values()) == 8 and report["states"].get("triaged") == 8
    assert report["flag_rate"]["k"] == report["flagged"] and report["flag_rate"]["n"] == 8
    assert (report["not_analysed"]["k"], report["not_analysed"]["n"], report["not_analysed"]["value"]) == (0, 8, 0.0)
    assert report["metrics"]["tp"] + report["metrics"]["fp"] + report["metrics"]["sub_flagged"] == report["flagged"]
    assert sum(g["series"] for g in report["by_acquisition"].values()) == 8
    assert sum(g["flagged"] for g in report["by_acquisition"].values()) == report["flagged"]
    assert report["variant"].count("/") == 2  # backend/device/precision the appliance chose


def test_the_card_says_whether_the_stream_stayed_within_the_bound():
    metrics = {"sensitivity": {"k": 8, "n": 8, "estimable": False, "value": None, "ci95": None},
               "specificity": {"k": 60, "n": 90, "estimable": True, "value": 0.667, "ci95": [0.56, 0.75]},
               "sub_indication_flags": {"k": 1, "n": 2, "estimable": True, "value": 0.5, "ci95": [0.1, 0.9]}}
    stream = {"variant": "openvino/CPU/int8", "seed": 5, "prevalence": 0.1, "series": 100, "positives": 10,
              "flagged": 40, "flag_rate": {"k": 40, "n": 100, "estimable": True, "value": 0.4, "ci95": [0.31, 0.5]},
              "metrics": metrics, "states": {"triaged": 98, "not-eligible": 2},
              "not_analysed": {"k": 2, "n": 100, "estimable": True, "value": 0.02, "ci95": [0.006, 0.070]},
              "by_acquisition": {"thin slices": {"series": 50, "findings": 4, "flagged": 30}}}
    targets = {"max_flag_rate": 0.2}
    text = mixed_stream_text(stream, targets)
    assert "**40 flagged: 0.400 (0.310-0.500) 40/100**, **above** the bound of 0.2" in text
    assert "| thin slices | 50 | 4 | 30 |" in text and "openvino/CPU/int8" in text
    assert "Final states: triaged 98, not-eligible 2.\nNot analysed: 0.020 (0.006-0.070) 2/100; before the hub" in text
    low = {**stream, "flagged": 12, "flag_rate": {"k": 12, "n": 100, "estimable": True, "value": 0.12, "ci95": [0.07, 0.2]}}
    assert "within the bound of 0.2" in mixed_stream_text(low, targets)
    assert mixed_stream_text(None, targets) == ""

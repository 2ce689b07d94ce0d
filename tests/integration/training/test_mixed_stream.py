"""The mixed-stream check: a signed package run on a fresh stream the way the box runs it,
and the card's sentence about it."""

from __future__ import annotations

import csv
import json
import tarfile

import pydicom

from training.card import mixed_stream_text
from training.data.ct_synth import CT_EXTERNAL_STYLE
from training.demo import head_ct
from training.mixed_stream import STREAM_PREVALENCE, mixed_stream_flag_rate, stream_config


def test_stream_config_keeps_the_generator_but_mixes_every_thickness():
    generator = head_ct().generator
    config = stream_config(generator, 50, seed=7)
    assert (config.n_patients, config.seed, config.positive_fraction) == (50, 7, STREAM_PREVALENCE)
    assert config.thickness_weights is None and config.thicknesses_mm == generator.thicknesses_mm
    assert (config.matrix, config.fov_mm, config.coverage_mm) == (generator.matrix, generator.fov_mm, generator.coverage_mm)


def test_a_quick_package_on_a_small_stream_reports_what_it_flagged(tmp_path, quick_packages):
    package = quick_packages["head-ct"]
    report = mixed_stream_flag_rate(package, quick_packages["public_key"], head_ct(quick=True).generator,
                                    n_series=8, seed=99, work_dir=tmp_path)
    with open(tmp_path / "stream" / "labels.csv", newline="") as f:
        labels = [int(row["label"]) for row in csv.DictReader(f)]
    scanners = {f"{ds.Manufacturer} {ds.ManufacturerModelName}" for ds in
                (pydicom.dcmread(p, stop_before_pixels=True) for p in (tmp_path / "stream").glob("*/CT/IM0001.dcm"))}
    assert report["series"] == len(labels) == 8 and report["positives"] == sum(labels)
    assert CT_EXTERNAL_STYLE in scanners and len(scanners) == 4  # the held-out scanner is in the stream
    assert report["flag_rate"]["k"] == report["flagged"] and report["flag_rate"]["n"] == 8
    assert sum(g["series"] for g in report["by_acquisition"].values()) == 8
    assert sum(g["flagged"] for g in report["by_acquisition"].values()) == report["flagged"]
    with tarfile.open(package) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    backend, _, precision = report["variant"].split("/")
    card = manifest["metrics"]["test"].get(f"{backend}/{precision}") or manifest["metrics"]["test"]["onnxruntime/fp32"]
    if card["at_prevalence"] is None:  # a quick build's test split is too small for an interval
        assert report["card_interval"] is None and report["within"] is None
    else:
        low, high = card["at_prevalence"]["0.10"]["flag_rate"]["ci95"]
        assert report["card_interval"] == [low, high]
        assert report["within"] == (low <= report["flagged"] / 8 <= high)


def test_the_card_says_whether_the_stream_fell_inside_its_interval():
    stream = {"variant": "openvino/CPU/fp32", "seed": 5, "prevalence": 0.1, "series": 100, "positives": 9,
              "flagged": 40, "flag_rate": {"k": 40, "n": 100, "estimable": True, "value": 0.4, "ci95": [0.31, 0.5]},
              "card_interval": [0.2, 0.35], "within": False,
              "sensitivity": {"k": 9, "n": 9, "estimable": False, "value": None, "ci95": None},
              "specificity": {"k": 60, "n": 91, "estimable": True, "value": 0.659, "ci95": [0.56, 0.75]},
              "by_acquisition": {"thin slices": {"series": 50, "positives": 4, "flagged": 30}}}
    text = mixed_stream_text(stream)
    assert "**outside** this card's" in text and "(0.200-0.350" in text and "| thin slices | 50 | 4 | 30 |" in text
    assert "inside this card's" in mixed_stream_text({**stream, "within": True})
    assert mixed_stream_text(None) == ""
    assert "gives no interval" in mixed_stream_text({**stream, "card_interval": None, "within": None})

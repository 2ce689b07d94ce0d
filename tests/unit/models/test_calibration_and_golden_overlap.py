"""Calibration lives in the manifest and the box applies it before thresholding; old
packages without one keep working; the golden heat-map check asks where the map points."""

from pathlib import Path

import numpy as np
import pytest

from appliance.models.backends import Runtime, Target
from appliance.models.manifest import Manifest, Variant
from appliance.models.qualify import Golden, cam_top_overlap, golden_check, top_region
from appliance.triage.pipeline import decide
from tests.helpers.packages import manifest_fields

def manifest(**extra) -> Manifest:
    fields = manifest_fields() | {"files": [{"path": p, "size": 1, "sha256": "0" * 64} for p in
                                            ("model/fp32.onnx", "golden/golden.npz", "drift/reference.json", "MODEL_CARD.md")],
                                  "signing_public_key": "GyCNY4+qqi3EeeMWz7pIkZ3LBtDDVFy2kwxOA5hLbAk="}
    return Manifest.model_validate(fields | extra)


def test_old_manifest_without_calibration_thresholds_the_aggregated_score():
    m = manifest()
    assert m.calibration is None and m.metrics == {} and m.lineage is None
    scores = np.array([0.1, 0.5, 0.3])  # topk_mean k=2 -> 0.4
    result = decide(m, scores, np.zeros((3, 4, 4)), [(Path("a"), 0)] * 3, "x")
    assert result.score == pytest.approx(0.4) and result.flag  # threshold 0.4


def test_calibrated_manifest_flags_on_the_calibrated_score():
    m = manifest(calibration={"method": "platt", "a": 2.0, "b": -1.0},
                 lineage={"parent_version": "1.0.0", "dataset_manifest_sha256": "a" * 64, "code_revision": "abc"})
    scores = np.array([0.1, 0.5, 0.3])
    # aggregated 0.4 -> sigmoid(2 * logit(0.4) - 1) = sigmoid(-1.8109) = 0.14059
    result = decide(m, scores, np.zeros((3, 4, 4)), [(Path("a"), 0)] * 3, "x")
    assert result.score == pytest.approx(0.14059, abs=1e-4) and not result.flag
    assert m.series_score(np.array([0.9, 0.9])) == pytest.approx(1 / (1 + np.exp(-(2 * np.log(9) - 1))))


def test_top_region_overlap_is_one_for_the_same_peak_and_zero_for_a_moved_one():
    cam = np.zeros((1, 10, 10))
    cam[0, 2, 3] = 5.0
    cam[0, 2, 4] = 4.0
    assert top_region(cam[0]).sum() == 5  # 5 % of 100 cells
    scaled = cam * 3 + 1  # raw logits differ a lot, the map points at the same place
    assert cam_top_overlap(cam, scaled) == 1.0
    moved = np.zeros((1, 10, 10))
    moved[0, 8, 8] = 5.0
    moved[0, 8, 7] = 4.0
    moved[0, 9, 8] = 3.0
    moved[0, 9, 7] = 2.5
    moved[0, 7, 8] = 2.0
    expected = np.zeros((1, 10, 10))
    expected[0, :1, :5] = [5, 4, 3, 2, 1]
    assert cam_top_overlap(expected, moved) == 0.0
    assert cam_top_overlap(expected, np.concatenate([expected, expected]).reshape(2, 10, 10)[:1]) == 1.0


def test_golden_check_uses_overlap_when_the_tolerance_sets_it():
    cam = np.zeros((2, 4, 4), np.float32)
    cam[:, 1, 1] = 3.0
    golden = Golden(np.zeros((2, 3, 8, 8), np.float32), np.array([0.2, 0.8]), cam)
    variant = Variant(backend="onnxruntime", precision="int8", files=["m"], test_auc=0.9,
                      tolerance={"score_atol": 0.02, "cam_atol": 0.001, "cam_min_overlap": 0.8})

    def runtime(score, out_cam):
        return Runtime(Target("onnxruntime", "CPU"), "int8", lambda x: (score, out_cam))

    ok, score_diff, cam_diff = golden_check(runtime(np.array([0.21, 0.79]), cam * 2), variant, golden)
    assert ok and score_diff == pytest.approx(0.01) and cam_diff == 0.0
    moved = np.zeros_like(cam)
    moved[:, 3, 3] = 3.0
    assert not golden_check(runtime(np.array([0.21, 0.79]), moved), variant, golden)[0]
    assert not golden_check(runtime(np.array([0.25, 0.79]), cam), variant, golden)[0]

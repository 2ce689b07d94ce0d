import numpy as np
import pytest
import torch

from training.backends import onnxruntime_runner, openvino_runner, run_batched, torch_runner
from training.export import OPSET, export_onnx, parity
from training.models import LSE_SHARPNESS, TriageNet, pooled_logit
from training.quantize import openvino_fp32


def test_outputs_score_probability_and_cam():
    torch.manual_seed(0)
    m = TriageNet(3, (8, 8, 8, 8)).eval()
    score, cam = m(torch.rand(5, 3, 32, 32))
    assert score.shape == (5,) and cam.shape == (5, 4, 4)
    assert torch.all((score > 0) & (score < 1))
    assert torch.allclose(torch.logit(score), pooled_logit(cam), atol=1e-5)


def test_pooling_is_a_smooth_maximum():
    cam = torch.zeros(1, 4, 4)
    cam[0, 1, 2] = 10.0
    assert 10.0 > float(pooled_logit(cam)) > 10.0 - np.log(16) / LSE_SHARPNESS - 1e-6
    assert float(pooled_logit(torch.full((1, 4, 4), -3.0))) == pytest.approx(-3.0)


def test_onnx_export_parity_and_openvino_match(tmp_path):
    torch.manual_seed(1)
    m = TriageNet(1, (8, 8, 8, 8)).eval()
    path = export_onnx(m, tmp_path / "m.onnx", channels=1, size=32)
    import onnx
    assert onnx.load(str(path)).opset_import[0].version == OPSET
    x = np.random.default_rng(0).random((6, 1, 32, 32)).astype(np.float32)
    diff = parity(m, path, x)
    assert diff["score"] < 1e-4 and diff["cam"] < 1e-3
    xml = openvino_fp32(path, tmp_path / "m.xml")
    s_ov, c_ov = run_batched(openvino_runner(xml), x, batch=4)
    s_t, c_t = torch_runner(m)(x)
    assert s_ov.shape == (6,) and np.max(np.abs(s_ov - s_t)) < 1e-4 and np.max(np.abs(c_ov - c_t)) < 1e-3
    s_b1, _ = onnxruntime_runner(path)(x[:1])
    assert s_b1.shape == (1,)


def test_parity_failure_is_reported(tmp_path):
    torch.manual_seed(2)
    m = TriageNet(1, (8, 8, 8, 8)).eval()
    path = export_onnx(m, tmp_path / "m.onnx", channels=1, size=32)
    with torch.no_grad():
        m.cam_head.bias += 1.0
    with pytest.raises(ValueError, match="ONNX parity failed"):
        parity(m, path, np.zeros((2, 1, 32, 32), np.float32))

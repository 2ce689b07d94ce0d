"""Issue 13, finding 12: ONNX Runtime INT8 must not depend on VNNI. U8S8 kernels without
VNNI add two u8 x s8 products in a saturating int16 (VPMADDUBSW); the build's INT8
weights are 7-bit so no pair can exceed 32767 on any x86 CPU."""

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from training import export, quantize
from training.models import TriageNet


def test_build_int8_cannot_saturate_u8s8_kernels_while_full_range_weights_can(tmp_path):
    torch.manual_seed(0)
    model = TriageNet(3, (8, 8, 8, 8)).eval()
    fp32 = export.export_onnx(model, tmp_path / "fp32.onnx", 3, 32)
    images = np.random.default_rng(0).random((16, 3, 32, 32)).astype(np.float32)

    built = quantize.onnx_int8(fp32, tmp_path / "int8.onnx", images)
    assert 0 < quantize.u8s8_pair_bound(built) <= quantize.INT16_MAX

    full = tmp_path / "full.onnx"  # what the 1.0.0 packages shipped: 8-bit weights
    quantize_static(str(fp32), str(full), quantize._Reader(images, onnx.load(str(fp32)).graph.input[0].name),
                    quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)
    assert quantize.u8s8_pair_bound(full) > quantize.INT16_MAX

"""INT8 and OpenVINO variants of an exported FP32 ONNX model.

* ONNX Runtime static quantisation, QDQ format, per-channel INT8 weights and UINT8
  activations calibrated (MinMax) on training images; the CAM head stays FP32 so the
  heat map keeps its resolution.
* OpenVINO IR FP32 (``ov.convert_model`` of the ONNX, weights kept FP32) and INT8 with
  NNCF post-training quantisation on the same calibration images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


class _Reader(CalibrationDataReader):
    """Feeds calibration images to ORT's calibrator in batches of 8."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: images[i:i + 8].astype(np.float32)} for i in range(0, len(images), 8)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _last_conv(model: onnx.ModelProto) -> str:
    return [n.name for n in model.graph.node if n.op_type == "Conv"][-1]


def onnx_int8(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """ORT static QDQ per-channel INT8 of ``fp32`` written to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        model = onnx.load(str(pre))
        quantize_static(
            str(pre), str(out), _Reader(calibration, model.graph.input[0].name),
            quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            nodes_to_exclude=[_last_conv(model)],
        )
    return out


def openvino_fp32(fp32: Path, out_xml: Path) -> Path:
    """OpenVINO IR (``.xml`` + ``.bin``) with FP32 weights."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(fp32)), str(out_xml), compress_to_fp16=False)
    return out_xml


def openvino_int8(fp32: Path, out_xml: Path, calibration: np.ndarray) -> Path:
    """OpenVINO IR quantised to INT8 by NNCF post-training quantisation."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32))
    items = [calibration[i:i + 1].astype(np.float32) for i in range(len(calibration))]
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def calibration_images(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` training images, half positive where possible, seeded."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k_pos = min(len(pos), n // 2)
    idx = np.concatenate([rng.choice(pos, k_pos, replace=False), rng.choice(neg, min(len(neg), n - k_pos), replace=False)])
    return images[np.sort(idx)]

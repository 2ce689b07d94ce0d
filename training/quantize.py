"""INT8 and OpenVINO variants of an exported FP32 ONNX model.

* ONNX Runtime static quantisation, QDQ format, per-channel INT8 weights with
  ``reduce_range`` (7-bit, [-64, 64]) and UINT8 activations calibrated (MinMax) on
  training images; the CAM head stays FP32 so the heat map keeps its resolution.

  Why 7-bit weights: ONNX Runtime runs U8S8 convolutions on x86 CPUs without VNNI (AVX2,
  AVX-512 without VNNI) with ``VPMADDUBSW``, which adds two u8 x s8 products into a
  saturating int16. Full-range weights reach 255 x (127 + 127) = 64770 > 32767 and the
  sum clips: the chest package's INT8 variant lost 0.995 of score on an AVX2-only EPYC
  (issue 13, finding 12) while it matched on VNNI machines (``VPDPBUSD`` accumulates in
  int32). With weights in [-64, 64] a pair is at most 255 x 128 = 32640, so no input
  can saturate on any x86 family (AVX2, AVX-512, AVX-512 VNNI, AMX); the ONNX Runtime
  quantisation guide recommends ``reduce_range`` for exactly this. :func:`u8s8_pair_bound`
  checks it on the built model, and the build leaves out a variant that could saturate.
* OpenVINO IR FP32 (``ov.convert_model`` of the ONNX, weights kept FP32) and INT8 with
  NNCF post-training quantisation on the same calibration images.

What stays FP32 in both INT8 variants (:func:`fp32_nodes`), measured on the chest demo's
calibration and gate splits (logit shift of the calibrated series score against FP32):

* Everything after the CAM head's convolution: the log-sum-exp pooling and the sigmoid.
  Both quantisers insert 8-bit quantise/dequantise pairs there by default (ONNX Runtime on
  Mul, Exp, ReduceMean..., NNCF on the CAM itself and on Mul, Exp, Log); on a score read
  against a threshold this alone added a spread of 0.74 logit.
* The first convolution, so the image itself is never quantised: a [0, 1] input in 1/255
  steps moved every score up by 0.5 logit on average (faint findings are a few grey
  levels). It is under 5% of the network's multiply-adds.
* The CAM head (a 1x1 convolution to one channel): the heat map keeps its resolution.

With these, the ONNX Runtime variant's shift was +0.03 +- 0.05 logit (was +0.71 +- 0.74).
NNCF's defaults then still left -0.34 +- 0.89 logit on the head-CT calibration split (up to
4.3): its fast bias correction, and activation ranges from the *mean* of each image's
extremes, which clip the strongest activations (the ones a max-pooled score rests on) and
unflag positives. Full bias correction and ranges from the true minimum and maximum, as
ONNX Runtime's MinMax calibrator takes them, brought it to +0.01 +- 0.04 (head) and
-0.01 +- 0.03 (chest).
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


def fp32_nodes(ops: list[tuple[str, str]], conv: str) -> list[str]:
    """Names of the nodes an INT8 variant keeps in FP32, from the graph's ``(name, type)``
    pairs in topological order (pure): the first convolution, and the last one (the CAM
    head) with everything after it. ``conv`` is the framework's convolution type name."""
    convs = [i for i, (_, kind) in enumerate(ops) if kind == conv]
    if not convs:
        raise ValueError("the model has no convolution to quantise")
    return [ops[convs[0]][0]] + [name for name, _ in ops[convs[-1]:]]


def onnx_int8(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """ORT static QDQ per-channel INT8 of ``fp32`` written to ``out``: only convolutions
    are quantised, and not those :func:`fp32_nodes` names."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        model = onnx.load(str(pre))
        quantize_static(
            str(pre), str(out), _Reader(calibration, model.graph.input[0].name),
            quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, reduce_range=True,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=fp32_nodes([(n.name, n.op_type) for n in model.graph.node], "Conv"),
        )
    return out


#: Largest int16 a ``VPMADDUBSW`` pair sum can hold.
INT16_MAX = 32767


def u8s8_pair_bound(model_path: Path) -> int:
    """Worst-case ``VPMADDUBSW`` pair sum of an ORT INT8 model: 255 x the largest
    ``|w_i| + |w_j|`` over the int8 weights of any quantised initializer (pure on the file).

    At most :data:`INT16_MAX` means U8S8 kernels without VNNI cannot saturate whatever the
    input. Pairs are taken over the whole flattened tensor's two largest magnitudes, an
    upper bound of every adjacent pair the kernel may form.
    """
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    bound = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in weights:
            continue
        w = weights[node.input[0]]
        if w.dtype != np.int8 or w.size < 2:
            continue
        top = np.sort(np.abs(w.astype(np.int32)).ravel())[-2:]
        bound = max(bound, 255 * int(top.sum()))
    return bound


def openvino_fp32(fp32: Path, out_xml: Path) -> Path:
    """OpenVINO IR (``.xml`` + ``.bin``) with FP32 weights."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(fp32)), str(out_xml), compress_to_fp16=False)
    return out_xml


def openvino_int8(fp32: Path, out_xml: Path, calibration: np.ndarray) -> Path:
    """OpenVINO IR quantised to INT8 by NNCF post-training quantisation (full bias
    correction, min-max activation ranges), the nodes :func:`fp32_nodes` names left FP32."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = ov.convert_model(str(fp32))
    ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()
           if op.get_type_name() not in ("Parameter", "Constant", "Result")]
    items = [calibration[i:i + 1].astype(np.float32) for i in range(len(calibration))]
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), fast_bias_correction=False,
                              ignored_scope=nncf.IgnoredScope(names=fp32_nodes(ops, "Convolution")),
                              advanced_parameters=AdvancedQuantizationParameters(
                                  activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def calibration_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Which of the training images (by ``labels``) calibrate quantisation: up to ``n``,
    half positive where possible, seeded, in order."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k_pos = min(len(pos), n // 2)
    idx = np.concatenate([rng.choice(pos, k_pos, replace=False), rng.choice(neg, min(len(neg), n - k_pos), replace=False)])
    return np.sort(idx)

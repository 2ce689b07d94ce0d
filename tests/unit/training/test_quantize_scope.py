"""What the INT8 variants quantise: only the convolutions between the first one and the
CAM head. The image, the CAM and the log-sum-exp pooling stay FP32 (quantising them moved
the chest demo's scores by 0.5-0.7 logit, see :mod:`training.quantize`)."""

import numpy as np
import onnx
import pytest
import torch

from training import export, quantize
from training.models import TriageNet


def test_fp32_nodes_are_the_first_convolution_and_everything_from_the_last_on():
    ops = [("in_norm", "Mul"), ("c1", "Conv"), ("r1", "Relu"), ("c2", "Conv"), ("r2", "Relu"), ("head", "Conv"),
           ("pool", "ReduceMean"), ("score", "Sigmoid")]
    assert quantize.fp32_nodes(ops, "Conv") == ["c1", "head", "pool", "score"]
    with pytest.raises(ValueError, match="no convolution"):
        quantize.fp32_nodes([("x", "Relu")], "Conv")


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    torch.manual_seed(0)
    path = export.export_onnx(TriageNet(3, (8, 8, 8, 8)).eval(), tmp_path_factory.mktemp("q") / "fp32.onnx", 3, 32)
    return path, np.random.default_rng(0).random((16, 3, 32, 32)).astype(np.float32)


def test_onnxruntime_int8_quantises_only_the_inner_convolutions(fp32_model, tmp_path):
    fp32, images = fp32_model
    model = onnx.load(str(quantize.onnx_int8(fp32, tmp_path / "int8.onnx", images)))
    dequantised = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # activation and weight (a bias the exporter shares between two layers may be int32)
    quantised = [[i in dequantised for i in n.input[:2]] for n in convs]
    assert quantised == [[False, False]] + [[True, True]] * (len(convs) - 2) + [[False, False]]
    readers = {n.op_type for n in model.graph.node for i in n.input if i in dequantised}
    assert readers <= {"Conv", "Relu"}, "the pooling and the score read FP32 tensors only"


def test_openvino_int8_leaves_the_image_and_the_pooling_in_fp32(fp32_model, tmp_path):
    import openvino as ov

    fp32, images = fp32_model
    xml = quantize.openvino_int8(fp32, tmp_path / "ov8.xml", images)
    model = ov.Core().read_model(str(xml))
    fq_consumers = [(t.get_node().get_type_name(), t.get_node().get_friendly_name())
                    for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
                    for out in op.outputs() for t in out.get_target_inputs()]
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    activation_fq = [name for kind, name in fq_consumers if kind == "Convolution"]
    assert fq_consumers and {kind for kind, _ in fq_consumers} == {"Convolution"}
    assert convs[0] not in activation_fq and convs[-1] not in activation_fq

"""A target that does not start as asked is an error, never a CPU run under a GPU's name."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper

from appliance.errors import PackageError
from appliance.models.backends import Target, available_targets, load


@pytest.fixture
def model(tmp_path):
    """``score = mean(image)``, ``cam = image[:, 0]``: a real graph with the two outputs."""
    image = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["n", 1, 4, 4])
    score = helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["n"])
    cam = helper.make_tensor_value_info("cam", onnx.TensorProto.FLOAT, ["n", 4, 4])
    nodes = [helper.make_node("ReduceMean", ["image"], ["score"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Squeeze", ["image", "axis"], ["cam"])]
    axis = helper.make_tensor("axis", onnx.TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "tiny", [image], [score, cam], [axis])
    path = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_the_cpu_target_runs(model):
    runtime = load(Target("onnxruntime", "CPU"), [model], "fp32", {})
    x = np.arange(32, dtype=np.float32).reshape(2, 1, 4, 4)
    score, cam = runtime.run(x)
    np.testing.assert_allclose(score, x.mean(axis=(1, 2, 3)))
    assert cam.shape == (2, 4, 4) and runtime.target.label == "onnxruntime/CPU"


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="this ONNX Runtime has CUDA: the fallback cannot be provoked here")
def test_a_cuda_target_that_falls_back_to_the_cpu_is_refused(model):
    assert Target("onnxruntime", "CUDA") not in available_targets()
    with pytest.raises(PackageError, match="could not start CUDAExecutionProvider.*CPUExecutionProvider"):
        load(Target("onnxruntime", "CUDA"), [model], "fp32", {})

"""The protobuf walk finds external-data locations wherever onnx itself would."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors

from appliance.models.onnx_refs import NotOnnx, external_locations


def external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.zeros(2, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def test_locations_in_initializers_subgraphs_and_attributes_are_all_found():
    branch = helper.make_graph([helper.make_node("Identity", ["a"], ["o"])], "branch", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
                               [external("a", "../in-branch")])
    constant = helper.make_node("Constant", [], ["k"], value=external("k", "/in-attribute"))
    choose = helper.make_node("If", ["c"], ["o"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([constant, choose], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
                              [external("w", "weights.bin")])
    model = helper.make_model(graph)
    expected = sorted(e.value for t in _get_all_tensors(model) for e in t.external_data if e.key == "location")
    assert sorted(external_locations(model.SerializeToString())) == expected
    assert len(expected) == 4


def test_bytes_that_are_not_protobuf_are_refused():
    with pytest.raises(NotOnnx):
        external_locations(b"\xff" * 64)

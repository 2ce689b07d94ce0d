"""A valid package's contents and helpers to rewrite tars (tampering tests)."""

import io
import tarfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def tiny_onnx(external: str | None = None) -> bytes:
    """A one-node ONNX model (Identity of a weight); with ``external``, the weight's data is
    declared to live in that file instead of in the model."""
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["score"])], "tiny", [],
                              [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, [4])], [weight])
    return helper.make_model(graph).SerializeToString()


FILES = {
    "model/fp32.onnx": tiny_onnx(),
    "golden/golden.npz": b"golden bytes",
    "drift/reference.json": b"{}",
    "MODEL_CARD.md": b"# card\nNOT FOR DIAGNOSTIC USE\n",
}


def manifest_fields() -> dict:
    return {
        "format_version": 1, "id": "test-model", "version": "1.2.3", "task": "binary-triage",
        "finding": "test finding", "labels": ["negative", "positive"],
        "input": {"kind": "ct_slice", "modalities": ["CT"], "body_part": "HEAD",
                  "sop_class_uids": ["1.2.840.10008.5.1.4.1.1.2"], "channels": 3, "size": 32,
                  "windows": [{"name": "brain", "center": 40, "width": 80},
                              {"name": "subdural", "center": 80, "width": 200},
                              {"name": "bone", "center": 600, "width": 2800}]},
        "outputs": {"score": "score", "cam": "cam", "cam_size": 4},
        "aggregation": {"method": "topk_mean", "k": 2},
        "operating_point": {"threshold": 0.4, "target_sensitivity": 0.95,
                            "validation_sensitivity": 0.96, "validation_specificity": 0.9},
        "variants": [{"backend": "onnxruntime", "precision": "fp32", "files": ["model/fp32.onnx"],
                      "test_auc": 0.97, "tolerance": {"score_atol": 1e-4, "cam_atol": 1e-3}}],
        "golden": "golden/golden.npz", "drift_reference": "drift/reference.json", "model_card": "MODEL_CARD.md",
        "created": "2026-11-27T00:00:00Z",
    }


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def rewrite(path: Path, out: Path, files: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    """Write ``files`` (name -> bytes) and ``links`` (name -> (tar type, target)) as a tar."""
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return out

"""Model packages for tests: a small valid one built from a synthetic manifest (and tars
rewritten by hand, for tampering), and packages derived from a real built one (another
version, broken golden outputs, input constraints, a model that answers NaN)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from training.package import load_private_key, write_package


# --- a small valid package from a synthetic manifest ---------------------------------------
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


# --- packages derived from a real one ------------------------------------------------------
def _members(package: Path) -> tuple[dict, dict[str, bytes]]:
    with tarfile.open(package) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    manifest = json.loads(members.pop("manifest.json"))
    members.pop("manifest.json.sig")
    manifest.pop("files")
    manifest.pop("signing_public_key")
    return manifest, members


def rebuilt(package: Path, key: Path, out: Path, version: str, break_golden: bool = False,
            threshold: float | None = None) -> Path:
    """The same model re-signed as ``version``; with ``break_golden`` its expected
    outputs no longer match what the model computes; with ``threshold`` another
    operating point (0.0 flags every series, 1.0 almost none)."""
    manifest, files = _members(package)
    manifest["version"] = version
    if threshold is not None:
        manifest["operating_point"]["threshold"] = threshold
        for case in manifest.get("golden_series") or []:  # the verdict at the new operating point
            case["flag"] = case["score"] >= threshold
    if break_golden:
        with np.load(io.BytesIO(files[manifest["golden"]])) as golden:
            arrays = {name: golden[name] for name in golden.files}
        arrays["score"] = 1.0 - arrays["score"]
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        files[manifest["golden"]] = buffer.getvalue()
    target = out / f"{manifest['id']}-{version}.tar"
    write_package(target, manifest, files, load_private_key(key))
    return target


def derived(package: Path, key: Path, out: Path, version: str, *, model_id: str | None = None,
            input_constraints: dict | None = None, nan_on_white: bool = False) -> Path:
    """The same model re-signed as ``version`` (and ``model_id``), with ``input_constraints``
    in its manifest; with ``nan_on_white`` it keeps only its FP32 ONNX variant, changed to
    answer NaN for an image whose first input channel (the brain window of a head CT) is
    white all over (mean above 0.99), which no golden case is, so it still passes its
    golden test: a model that fails on one kind of series."""
    manifest, files = _members(package)
    manifest["version"] = version
    if model_id is not None:
        manifest["id"] = model_id
    if input_constraints is not None:
        manifest["input_constraints"] = input_constraints
    if nan_on_white:
        [variant] = [v for v in manifest["variants"] if v["backend"] == "onnxruntime" and v["precision"] == "fp32"]
        manifest["variants"] = [variant]
        manifest["excluded_variants"] = []
        kept = {manifest["golden"], manifest["drift_reference"], manifest["model_card"], *variant["files"],
                *(name for case in manifest.get("golden_series") or [] for name in case["files"])}
        files = {name: data for name, data in files.items() if name in kept}
        files[variant["files"][0]] = _nan_on_white(files[variant["files"][0]], manifest["outputs"]["score"])
    target = out / f"{manifest['id']}-{version}.tar"
    write_package(target, manifest, files, load_private_key(key))
    return target


def _nan_on_white(model: bytes, score_name: str) -> bytes:
    """score + 0 * sqrt(0.99 - mean(input[:, 0])): unchanged unless the first channel's mean exceeds 0.99."""
    from onnx import TensorProto

    graph = onnx.load_from_string(model)
    inner = graph.graph
    source = inner.input[0].name
    for node in inner.node:
        node.output[:] = [f"{name}_raw" if name == score_name else name for name in node.output]
    inner.initializer.extend([
        helper.make_tensor("nan_limit", TensorProto.FLOAT, [], [0.99]),
        helper.make_tensor("nan_zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("nan_channel", TensorProto.INT64, [], [0]),
    ])
    inner.node.extend([
        helper.make_node("Gather", [source, "nan_channel"], ["nan_first"], axis=1),
        helper.make_node("ReduceMean", ["nan_first"], ["nan_mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Sub", ["nan_limit", "nan_mean"], ["nan_room"]),
        helper.make_node("Sqrt", ["nan_room"], ["nan_gate"]),
        helper.make_node("Mul", ["nan_gate", "nan_zero"], ["nan_term"]),
        helper.make_node("Add", [f"{score_name}_raw", "nan_term"], [score_name]),
    ])
    return graph.SerializeToString()

"""Inference backends the box can run a package variant on: ``inputs -> (score, cam)``.

A :class:`Runtime` wraps one compiled model: a float32 ``(N, C, H, W)`` batch in, NumPy
``score`` ``(N,)`` and ``cam`` ``(N, h, w)`` out. Which devices exist is asked of the
libraries at run time: ONNX Runtime on the CPU (and its CUDA or OpenVINO execution
providers when installed), the OpenVINO runtime on the CPU (and a GPU when present).
A target that does not start as asked (ONNX Runtime's CUDA provider without its CUDA
libraries falls back to the CPU on its own) is an error, never a CPU run under a GPU's
name: qualification then records that trial as failed, and the timing among those that
passed picks the target (``models.qualify``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import PackageError

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Target:
    """Where a variant can run: a backend and a device on it."""

    backend: str  # "onnxruntime" or "openvino", as in the manifest's variants
    device: str  # "CPU", "CUDA", "GPU", "OpenVINO-EP"

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.device}"


@dataclass
class Runtime:
    """A loaded model ready to run."""

    target: Target
    precision: str
    run: Runner


def available_targets() -> list[Target]:
    """Every backend/device pair this box can use now."""
    targets: list[Target] = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        targets.append(Target("onnxruntime", "CPU"))
        if "CUDAExecutionProvider" in providers:
            targets.append(Target("onnxruntime", "CUDA"))
        if "OpenVINOExecutionProvider" in providers:
            targets.append(Target("onnxruntime", "OpenVINO-EP"))
    except ImportError:
        pass
    try:
        import openvino as ov

        devices = ov.Core().available_devices
        targets += [Target("openvino", d) for d in ("CPU", "GPU") if d in devices]
    except ImportError:
        pass
    return targets


_ORT_PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "OpenVINO-EP": ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
}


def load(
    target: Target,
    files: list[Path],
    precision: str,
    options: Mapping[str, str],
    output_names: tuple[str, str] = ("score", "cam"),
) -> Runtime:
    """Compile one variant's files for ``target``.

    Parameters
    ----------
    files : list of Path
        The variant's files as extracted: the ``.onnx`` for ONNX Runtime, the ``.xml``
        (with its ``.bin`` beside it) for OpenVINO.
    options : mapping
        The variant's backend options from the manifest (OpenVINO compile config).
    """
    score_name, cam_name = output_names
    if target.backend == "onnxruntime":
        import onnxruntime as ort

        model = next(f for f in files if f.suffix == ".onnx")
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model), session_options, providers=_ORT_PROVIDERS[target.device])
        wanted, got = _ORT_PROVIDERS[target.device][0], session.get_providers()[0]
        if got != wanted:  # ONNX Runtime falls back to the CPU with a warning only
            raise PackageError(f"{target.label}: ONNX Runtime could not start {wanted} (it fell back to {got})")
        input_name = session.get_inputs()[0].name

        def run_ort(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            score, cam = session.run([score_name, cam_name], {input_name: np.ascontiguousarray(x, np.float32)})
            return np.asarray(score), np.asarray(cam)

        return Runtime(target, precision, run_ort)
    if target.backend == "openvino":
        import openvino as ov

        model = next(f for f in files if f.suffix == ".xml")
        compiled = ov.Core().compile_model(str(model), target.device, dict(options))
        score_out, cam_out = compiled.output(score_name), compiled.output(cam_name)

        def run_ov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            result = compiled(np.ascontiguousarray(x, np.float32))
            return np.asarray(result[score_out]), np.asarray(result[cam_out])

        return Runtime(target, precision, run_ov)
    raise PackageError(f"unknown backend {target.backend!r}")

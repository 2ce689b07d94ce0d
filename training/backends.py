"""Uniform runners over torch, ONNX Runtime and OpenVINO: ``inputs -> (score, cam)``.

ONNX Runtime and OpenVINO are loaded through :mod:`appliance.models.backends`, so
training measures the models the way the box will run them.

A runner maps a float32 (N, C, H, W) batch to NumPy ``score`` (N,) and ``cam``
(N, h, w), so evaluation, parity checks and benchmarks treat every backend alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from appliance.models.backends import Runner, Target, load

#: OpenVINO compile options recorded in each OpenVINO variant of a package: without the
#: precision hint, CPUs with bf16 units silently run "FP32" models in bfloat16.
OPENVINO_OPTIONS = {"INFERENCE_PRECISION_HINT": "f32"}


def torch_runner(model: torch.nn.Module) -> Runner:
    """Eager FP32 torch, eval mode, no grad."""
    model.eval()

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            score, cam = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return score.numpy(), cam.numpy()

    return run


def onnxruntime_runner(path: Path) -> Runner:
    """ONNX Runtime on the CPU, loaded exactly as the appliance loads it."""
    return load(Target("onnxruntime", "CPU"), [Path(path)], "fp32", {}).run


def openvino_runner(xml: Path) -> Runner:
    """OpenVINO on the CPU with :data:`OPENVINO_OPTIONS`, loaded as the appliance loads it."""
    return load(Target("openvino", "CPU"), [Path(xml)], "fp32", OPENVINO_OPTIONS).run


def run_batched(runner: Runner, inputs: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Apply a runner over ``inputs`` in batches; concatenated ``(score, cam)``."""
    scores, cams = [], []
    for i in range(0, len(inputs), batch):
        s, c = runner(inputs[i:i + batch])
        scores.append(s)
        cams.append(c)
    return np.concatenate(scores), np.concatenate(cams)

"""Uniform runners over torch, ONNX Runtime and OpenVINO: ``inputs -> (score, cam)``.

A runner maps a float32 (N, C, H, W) batch to NumPy ``score`` (N,) and ``cam``
(N, h, w), so evaluation, parity checks and benchmarks treat every backend alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

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


def onnxruntime_runner(path: Path, threads: int = 0) -> Runner:
    """ONNX Runtime CPU session (``threads=0``: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, cam = sess.run(["score", "cam"], {name: np.ascontiguousarray(x, dtype=np.float32)})
        return score, cam

    return run


def openvino_runner(xml: Path) -> Runner:
    """OpenVINO compiled for CPU with :data:`OPENVINO_OPTIONS`."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", OPENVINO_OPTIONS)
    score_out, cam_out = compiled.output("score"), compiled.output("cam")

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = compiled(np.ascontiguousarray(x, dtype=np.float32))
        return np.asarray(res[score_out]), np.asarray(res[cam_out])

    return run


def run_batched(runner: Runner, inputs: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Apply a runner over ``inputs`` in batches; concatenated ``(score, cam)``."""
    scores, cams = [], []
    for i in range(0, len(inputs), batch):
        s, c = runner(inputs[i:i + batch])
        scores.append(s)
        cams.append(c)
    return np.concatenate(scores), np.concatenate(cams)

"""Export a :class:`~training.models.TriageNet` to ONNX and check parity with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.backends import onnxruntime_runner, torch_runner

#: ONNX opset the packages are built with; the appliance's runtimes must support it.
OPSET = 17
#: Largest allowed |torch - ONNX Runtime| on the parity inputs.
PARITY_BOUND = {"score": 1e-4, "cam": 1e-3}


def export_onnx(model: torch.nn.Module, path: Path, channels: int, size: int) -> Path:
    """Write ``model`` as ONNX: input ``image`` (N, C, S, S), outputs ``score``, ``cam``; batch is dynamic."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, channels, size, size)
    torch.onnx.export(
        model, (example,), str(path), input_names=["image"], output_names=["score", "cam"],
        dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "cam": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    return path


def parity(model: torch.nn.Module, onnx_path: Path, inputs: np.ndarray) -> dict[str, float]:
    """Max abs difference of ``score`` and ``cam`` between torch and ONNX Runtime.

    Raises
    ------
    ValueError
        If a difference exceeds :data:`PARITY_BOUND`.
    """
    ts, tc = torch_runner(model)(inputs)
    os_, oc = onnxruntime_runner(onnx_path)(inputs)
    diff = {"score": float(np.max(np.abs(ts - os_))), "cam": float(np.max(np.abs(tc - oc)))}
    for k, bound in PARITY_BOUND.items():
        if diff[k] > bound:
            raise ValueError(f"ONNX parity failed: max |torch - onnx| for {k} is {diff[k]:.2e} > {bound:.0e}")
    return diff

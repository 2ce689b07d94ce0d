"""Per-image latency of a built model in every backend and precision, side by side.

``python -m training.bench [--model-dir DIR]`` times the same network in torch eager
FP32, ONNX Runtime FP32 / INT8 (QDQ) and OpenVINO FP32 / INT8 (NNCF) at batch 1 and 16 on
the build's test-like inputs, and prints a Markdown table with speed-ups over torch eager.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from training.backends import Runner, onnxruntime_runner, openvino_runner, torch_runner
from training.machine import machine
from training.train import load_checkpoint


def per_image_ms(runner: Runner, batch: np.ndarray, min_seconds: float = 1.0, max_iters: int = 200) -> float:
    """Mean wall time per image (ms) over at least 5 runs and ~``min_seconds``, after 3 warm-ups."""
    for _ in range(3):
        runner(batch)
    n, t0 = 0, time.perf_counter()
    while n < max_iters and (n < 5 or time.perf_counter() - t0 < min_seconds):
        runner(batch)
        n += 1
    return (time.perf_counter() - t0) / n / len(batch) * 1000


def runners(model_dir: Path) -> dict[str, Runner]:
    """Every variant the build produced (whether or not the gate kept it)."""
    model, _ = load_checkpoint(model_dir / "model.pt")
    return {
        "torch eager FP32": torch_runner(model),
        "ONNX Runtime FP32": onnxruntime_runner(model_dir / "fp32.onnx"),
        "ONNX Runtime INT8 (QDQ)": onnxruntime_runner(model_dir / "int8.onnx"),
        "OpenVINO FP32": openvino_runner(model_dir / "openvino-fp32.xml"),
        "OpenVINO INT8 (NNCF)": openvino_runner(model_dir / "openvino-int8.xml"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=Path("var/build/head-ct/model"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    model, meta = load_checkpoint(args.model_dir / "model.pt")
    channels, size = model.config["in_channels"], meta["input_size"]
    rs = runners(args.model_dir)
    rng = np.random.default_rng(0)
    results = {}
    for b in args.batches:
        x = rng.random((b, channels, size, size), dtype=np.float32)
        results[b] = {name: per_image_ms(r, x) for name, r in rs.items()}
    print(f"Model: {args.model_dir} ({channels}x{size}x{size} input, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters); machine: {machine()}\n")
    print("| backend | " + " | ".join(f"batch {b}: ms/image | speed-up" for b in args.batches) + " |")
    print("|---|" + "---|---|" * len(args.batches))
    for name in rs:
        cells = []
        for b in args.batches:
            base = results[b]["torch eager FP32"]
            cells.append(f"{results[b][name]:.3f} | {base / results[b][name]:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

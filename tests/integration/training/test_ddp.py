"""``torchrun --nproc_per_node 2`` (gloo, CPU) trains to the same quality as one process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from training.backends import torch_runner
from training.evaluate import roc_auc, series_scores
from training.train import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
sys.path.insert(0, str(WORKER.parent))
from ddp_worker import easy_series  # noqa: E402


def _run(prefix: list[str], out: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([*prefix, str(WORKER), str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return load_checkpoint(out)


def test_two_process_ddp_matches_single_process(tmp_path):
    single, single_meta = _run([sys.executable], tmp_path / "single.pt")
    ddp, ddp_meta = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                         tmp_path / "ddp.pt")
    assert {r["world"] for r in ddp_meta["history"]} == {2} and {r["world"] for r in single_meta["history"]} == {1}
    held_out = easy_series(60, 5000, 9)
    y = np.array([s.label for s in held_out])
    auc = {name: roc_auc(y, series_scores(torch_runner(m), held_out, lambda s: float(np.max(s))))
           for name, m in (("single", single), ("ddp", ddp))}
    assert auc["single"] >= 0.95 and auc["ddp"] >= 0.95, auc
    assert abs(auc["ddp"] - auc["single"]) <= 0.05, auc
    loss = {name: min(r["val_loss"] for r in meta["history"]) for name, meta in (("single", single_meta), ("ddp", ddp_meta))}
    assert abs(loss["ddp"] - loss["single"]) <= 0.15, loss
    assert not all(torch.equal(a, b) for a, b in zip(single.state_dict().values(), ddp.state_dict().values()))

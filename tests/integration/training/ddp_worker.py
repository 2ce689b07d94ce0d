"""Train on a small, easy, seeded task; run directly or under torchrun (see test_ddp.py).

Usage: python ddp_worker.py OUT.pt  |  torchrun --nproc_per_node 2 ddp_worker.py OUT.pt
Images are noise with, in positive series, one bright 4x4 square on one of four images.
"""

import sys

import numpy as np
import torch.distributed as dist

from training.data.folder import Series
from training.train import TrainConfig, save_checkpoint, train

CONFIG = TrainConfig(seed=3, epochs=8, patience=10, batch_size=16, widths=(8, 16, 16, 16))


def easy_series(n: int, first_patient: int, seed: int) -> list[Series]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = int(rng.random() < 0.5)
        x = rng.normal(0.4, 0.05, (4, 1, 32, 32)).astype(np.float32)
        image_labels = np.zeros(4, np.int64)
        if label:
            k, (r, c) = int(rng.integers(4)), rng.integers(2, 26, 2)
            x[k, 0, r:r + 4, c:c + 4] += 0.3
            image_labels[k] = 1
        pid = str(first_patient + i)
        out.append(Series(pid, "study", pid, "scanner", label, {}, [f"{pid}.{j}" for j in range(4)], image_labels, x,
                          np.arange(4)[:, None], None, {}))
    return out


if __name__ == "__main__":
    model, history = train(easy_series(80, 0, 1), easy_series(40, 1000, 2), CONFIG, lambda s: float(np.max(s)))
    if not dist.is_initialized() or dist.get_rank() == 0:
        save_checkpoint(sys.argv[1], model, {"history": history})
    if dist.is_initialized():
        dist.destroy_process_group()

"""Seeded training of a :class:`training.models.TriageNet`, single process or DDP.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group uses the gloo backend; every
rank builds the same seeded epoch order and takes its shard, with the per-rank batch
``batch_size / world`` so the global batch matches a single process. Rank 0 decides early
stopping and broadcasts it. Each epoch samples every positive image and
``negatives_per_positive`` times as many negatives (fresh each epoch), with flips and
small shifts. With ``hard_negative_share`` > 0 that share of the negatives is drawn in
proportion to how positive the model last scored each one (its sigmoid the last time it
was in a batch; 0.5 before), the rest uniformly: calcifications, dense sinuses and vertex
slices are rare among negative slices, and a series is flagged by its worst slice.

With lesion maps (``slice_masks.npz``) and ``map_weight`` > 0 the activation map is
supervised too (:func:`map_loss`): every cell of a negative image and every cell of a
positive one away from the lesion is a negative, and cells the lesion clearly fills are
positives, so the model cannot flag a positive slice by its skull edge or calcification
and learn that as haemorrhage. Early stopping watches the validation image loss (not
before ``min_epochs``); the best weights are kept, or with ``keep_last`` every epoch runs
and the last weights are kept. With ``average_last`` N > 1 as well, the kept weights are
the mean of the last N epochs' weights (BatchNorm statistics measured again on the mean):
two trainings that differ only in the order their sums round end closer together than
their last epochs do, and an averaged model scores fewer series next to any threshold.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.data.folder import Images, Series
from training.evaluate import roc_auc
from training.models import TriageNet, build_model, pooled_logit


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; everything random derives from ``seed``."""

    seed: int = 0
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 3
    min_epochs: int = 1
    negatives_per_positive: float = 3.0
    max_shift: int = 4
    widths: tuple[int, ...] = (16, 32, 48, 64)
    downsamplings: int = 3
    hard_negative_share: float = 0.0
    map_weight: float = 0.0
    #: Run every epoch of the cosine schedule and keep the last weights: validation is then
    #: only watched (its loss on a few dozen series is too noisy to pick an epoch by).
    keep_last: bool = False
    #: With ``keep_last``: keep the mean of the last this many epochs' weights (1: the last).
    average_last: int = 1

    def __post_init__(self) -> None:
        if self.average_last < 1 or self.average_last > self.epochs:
            raise ValueError(f"train.average_last must be 1-{self.epochs} (the epochs), got {self.average_last}")
        if self.average_last > 1 and not self.keep_last:
            raise ValueError("train.average_last needs train.keep_last = true: early stopping keeps one epoch's weights")


def _world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _epoch_indices(labels: np.ndarray, cfg: TrainConfig, epoch: int, hardness: np.ndarray | None = None) -> np.ndarray:
    """Every positive and the epoch's negatives (see the module docstring), shuffled (pure)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_neg = min(len(neg), max(int(cfg.negatives_per_positive * len(pos)), cfg.batch_size))
    n_hard = int(round(cfg.hard_negative_share * n_neg)) if hardness is not None else 0
    hard = np.array([], dtype=np.int64)
    if n_hard:
        weights = hardness[neg] + 1e-6
        hard = rng.choice(neg, n_hard, replace=False, p=weights / weights.sum())
    rest = np.setdiff1d(neg, hard, assume_unique=True)
    easy = rng.choice(rest, n_neg - len(hard), replace=False)
    return rng.permutation(np.concatenate([pos, hard, easy]))


def _augment(x: torch.Tensor, maps: torch.Tensor | None, rng: np.random.Generator,
             max_shift: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random horizontal flip and shift of a batch, and the same of its lesion maps
    (the shift rounded to the maps' cells)."""
    flip = rng.random() < 0.5
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
    if flip:
        x = torch.flip(x, dims=[3])
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if maps is None:
        return x, None
    scale = maps.shape[-1] / x.shape[-1]
    if flip:
        maps = torch.flip(maps, dims=[3])
    return x, torch.roll(maps, shifts=(round(dy * scale), round(dx * scale)), dims=(2, 3))


#: A map cell at least this share lesion is a positive; cells with less, and their
#: neighbours, are left out of :func:`map_loss` (partial cells, shifts rounded to cells).
MAP_POSITIVE_SHARE = 0.1


def map_loss(cam: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Cell-wise logistic loss of the activation map ``(N, H, W)`` against lesion maps
    ``(N, 1, M, M)`` pooled to its cells: cells the lesion fills by at least
    :data:`MAP_POSITIVE_SHARE` are positives, cells with no lesion nearby negatives."""
    share = nn.functional.adaptive_avg_pool2d(maps, cam.shape[-2:])[:, 0]
    near = nn.functional.max_pool2d(share[:, None], 3, stride=1, padding=1)[:, 0] > 0
    positive = share >= MAP_POSITIVE_SHARE
    counted = positive | ~near
    per_cell = nn.functional.binary_cross_entropy_with_logits(cam, positive.float(), reduction="none")
    return (per_cell * counted).sum() / counted.sum().clamp(min=1)


def train(
    train_set: list[Series] | Images, val_set: list[Series] | Images, cfg: TrainConfig,
    aggregate: Callable[[np.ndarray], float], log: Callable[[dict], None] = lambda r: None,
) -> tuple[TriageNet, list[dict]]:
    """Train and return the best model (by validation loss) and the per-epoch history."""
    rank, world = _world()
    torch.manual_seed(cfg.seed)
    torch.set_flush_denormal(True)  # activations that decay to denormals cost a sixth of a step
    try:
        return _train(train_set, val_set, cfg, aggregate, log, rank, world)
    finally:
        torch.set_flush_denormal(False)  # process-wide state: the rest of the process keeps IEEE floats


def _train(
    train_set: list[Series] | Images, val_set: list[Series] | Images, cfg: TrainConfig,
    aggregate: Callable[[np.ndarray], float], log: Callable[[dict], None], rank: int, world: int,
) -> tuple[TriageNet, list[dict]]:
    x_train = train_set if isinstance(train_set, Images) else Images(train_set)
    x_val = val_set if isinstance(val_set, Images) else Images(val_set)
    y_train = x_train.labels
    y_val = torch.from_numpy(x_val.labels.astype(np.float32))
    model = TriageNet(x_train.channels, cfg.widths, cfg.downsamplings).to(memory_format=torch.channels_last)
    supervise_maps = cfg.map_weight > 0 and x_train.masks is not None
    net = DistributedDataParallel(_Logits(model)) if world > 1 else _Logits(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = nn.BCEWithLogitsLoss()
    local_batch = max(1, cfg.batch_size // world)
    history: list[dict] = []
    best = (float("inf"), copy.deepcopy(model.state_dict()), 0)
    hardness = np.full(len(y_train), 0.5)
    weight_sum: dict[str, torch.Tensor] = {}
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        order = _epoch_indices(y_train, cfg, epoch, hardness if cfg.hard_negative_share else None)
        seen = np.zeros(len(y_train))
        steps = max(1, len(order) // (local_batch * world))
        shard = np.resize(order, steps * local_batch * world).reshape(steps, world, local_batch)[:, rank]
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        net.train()
        total = 0.0
        for idx in shard:
            maps = torch.from_numpy(x_train.take_masks(idx)) if supervise_maps else None
            xb, maps = _augment(torch.from_numpy(x_train.take(idx)), maps, rng, cfg.max_shift)
            yb = torch.from_numpy(y_train[idx].astype(np.float32))
            logits, cam = net(xb.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits, yb)
            if maps is not None:
                loss = loss + cfg.map_weight * map_loss(cam, maps)
            seen[idx] = torch.sigmoid(logits.detach()).numpy() + 1.0  # + 1: "seen", whatever the score
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        hardness = _merge_hardness(hardness, seen, world)
        _recalibrate_batchnorm(model, x_train, order, cfg.batch_size, rank, world)
        model.eval()
        with torch.no_grad():
            val_logits = torch.cat([model.logit(_nhwc(x_val.take(np.arange(i, min(i + 128, len(x_val))))))
                                    for i in range(0, len(x_val), 128)])
            val_loss = float(loss_fn(val_logits, y_val))
        val_scores = _series_scores(torch.sigmoid(val_logits).numpy(), x_val.series_sizes, aggregate)
        val_auc = roc_auc(x_val.series_labels, val_scores)
        record = {"epoch": epoch, "train_loss": round(total / max(steps, 1), 5), "val_loss": round(val_loss, 5),
                  "val_series_auc": round(val_auc, 5), "lr": sched.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 2),
                  "rank": rank, "world": world}
        history.append(record)
        log(record)
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(model.state_dict()), epoch)
        if cfg.average_last > 1 and epoch > cfg.epochs - cfg.average_last:
            for name, p in model.named_parameters():
                weight_sum[name] = weight_sum.get(name, 0) + p.detach().double()
        stop = torch.tensor([int(not cfg.keep_last and epoch >= cfg.min_epochs and epoch - best[2] >= cfg.patience)])
        if world > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            break
    if not cfg.keep_last:
        model.load_state_dict(best[1])
    elif cfg.average_last > 1:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(weight_sum[name] / cfg.average_last)
        _recalibrate_batchnorm(model, x_train, order, cfg.batch_size, rank, world)
        model.eval()
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, history


def _nhwc(batch: np.ndarray) -> torch.Tensor:
    """A batch as a channels-last tensor: oneDNN's convolutions on the CPU run about a
    quarter faster on it than on NCHW (the values are the same)."""
    return torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)


def _series_scores(image_scores: np.ndarray, sizes: np.ndarray, aggregate: Callable[[np.ndarray], float]) -> np.ndarray:
    """One aggregated score per series from the scores of all their images, in
    :class:`Images` order, ``sizes`` images each (pure): the validation pass scores each
    image once."""
    bounds = np.cumsum(sizes)[:-1]
    return np.array([aggregate(part) for part in np.split(image_scores, bounds)])


def _merge_hardness(hardness: np.ndarray, seen: np.ndarray, world: int) -> np.ndarray:
    """The scores of this epoch's images (``seen``: score + 1, 0 where unseen) over the
    last ones; under DDP every rank contributes its shard, so all ranks agree."""
    if world > 1:
        total = torch.from_numpy(seen)
        dist.all_reduce(total)
        seen = total.numpy()
    return np.where(seen > 0, seen - 1.0, hardness)


def _recalibrate_batchnorm(model: TriageNet, x: Images, order: np.ndarray, batch: int, rank: int,
                           world: int, max_batches: int = 40) -> None:
    """Precise BatchNorm statistics: exact averages over training batches with the final weights.

    Running averages taken while the weights move lag behind them and make eval-mode
    outputs disagree with training; each rank measures its share of the epoch's images
    and the ranks average, so every rank ends with the same statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)][rank::world][:max_batches]
    with torch.no_grad():
        for idx in chunks:
            model.logit(_nhwc(x.take(idx)))
    for m in norms:
        m.momentum = 0.1
        if world > 1:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf /= world


class _Logits(nn.Module):
    """The model's image logit and activation map as ``forward``, so DDP's hooks see the
    training graph."""

    def __init__(self, model: TriageNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.model.cam(x)
        return pooled_logit(cam), cam


def save_checkpoint(path: Path, model: TriageNet, meta: dict) -> None:
    """Weights, model config and metadata (JSON-able) in one torch file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "state_dict": model.state_dict(), "meta": json.loads(json.dumps(meta))}, path)


def load_checkpoint(path: Path) -> tuple[TriageNet, dict]:
    """Model (eval mode) and metadata from :func:`save_checkpoint`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["meta"]


def config_dict(cfg: TrainConfig) -> dict:
    """TrainConfig as a JSON-able dict."""
    return asdict(cfg)

"""Supervising the activation map with lesion maps (``training.train.map_loss``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data.folder import Series
from training.train import TrainConfig, _augment, map_loss, train


def bce(logit: float, target: float) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logit), torch.tensor(target)))


def test_a_negative_image_makes_every_cell_a_negative():
    cam = torch.linspace(-2, 2, 16).reshape(1, 4, 4)
    loss = map_loss(cam, torch.zeros(1, 1, 8, 8))
    assert float(loss) == pytest.approx(np.mean([bce(v, 0.0) for v in cam.flatten().tolist()]), rel=1e-5)


def test_lesion_cells_are_positives_and_cells_beside_a_lesion_are_left_out():
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 0, 0] = 0.5   # a cell the lesion fills by half: positive
    maps[0, 0, 3, 3] = 0.05  # a trace: neither positive nor negative, nor its neighbours
    cam = torch.full((1, 4, 4), 1.0)
    # Counted: (0, 0) positive; negatives are the cells not within one of (0, 0) or (3, 3).
    near = {(r, c) for r in range(4) for c in range(4) if max(abs(r - 0), abs(c - 0)) <= 1 or max(abs(r - 3), abs(c - 3)) <= 1}
    negatives = 16 - len(near)
    expected = (bce(1.0, 1.0) + negatives * bce(1.0, 0.0)) / (1 + negatives)
    assert float(map_loss(cam, maps)) == pytest.approx(expected, rel=1e-5)


def centre(image: torch.Tensor) -> np.ndarray:
    rows, cols = np.nonzero(image.numpy() > 0.5)
    return np.array([rows.mean() + 0.5, cols.mean() + 0.5]) / image.shape[-1]


def test_augmenting_moves_the_map_with_the_image():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 8:16, 16:24] = 1.0
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2:4, 4:6] = 1.0
    moves = set()
    for seed in range(12):
        moved, moved_maps = _augment(x, maps, np.random.default_rng(seed), max_shift=4)
        # The map follows the image to within half of one of its cells (the shift is rounded).
        assert np.abs(centre(moved[0, 0]) - centre(moved_maps[0, 0])).max() <= 0.5 / 8 + 1e-9
        moves.add(tuple(centre(moved[0, 0])))
    assert len(moves) > 6


def confounded_series(n: int, first: int, seed: int, with_maps: bool) -> list[Series]:
    """Positive images hold a small bright lesion in their lower right and, in every one
    of them, a bright mark in the top-left corner too: a shortcut that image labels alone
    reward. 64 x 64 images, so an 8 x 8 activation map; lesion maps 16 x 16."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        x = rng.normal(0.3, 0.05, (4, 1, 64, 64)).astype(np.float32)
        maps = np.zeros((4, 1, 16, 16), np.float32)
        labels = np.zeros(4, np.int64)
        if label:
            for k in range(4):
                r, c = (int(v) for v in rng.integers(36, 56, 2))
                x[k, 0, r:r + 6, c:c + 6] += 0.35
                x[k, 0, 2:8, 2:8] += 0.5
                maps[k, 0, r // 4:(r + 5) // 4 + 1, c // 4:(c + 5) // 4 + 1] = 1.0
            labels[:] = 1
        pid = str(first + i)
        out.append(Series(pid, "study", pid, "scanner", label, {}, [f"{pid}.{j}" for j in range(4)], labels, x,
                          np.arange(4)[:, None], maps if with_maps else None, {}))
    return out


def test_map_supervision_stops_the_model_flagging_the_shortcut():
    cfg = TrainConfig(seed=3, epochs=10, min_epochs=10, widths=(8, 8, 8, 8), batch_size=16, map_weight=1.0)
    mark_only = np.random.default_rng(9).normal(0.3, 0.05, (8, 1, 64, 64)).astype(np.float32)
    mark_only[:, 0, 2:8, 2:8] += 0.5
    scores = {}
    for with_maps in (False, True):
        model, _ = train(confounded_series(60, 0, 1, with_maps), confounded_series(20, 1000, 2, with_maps), cfg,
                         lambda s: float(np.max(s)))
        with torch.no_grad():
            scores[with_maps] = float(model(torch.from_numpy(mark_only))[0].mean())
    # Image labels alone learn the mark; the maps take most of it away (not all: each
    # cell sees the whole image).
    assert scores[False] > 0.9 and scores[True] < scores[False] - 0.3

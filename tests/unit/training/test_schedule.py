"""The model's downsampling depth and the fixed schedule that keeps the last weights."""

import numpy as np
import pytest
import torch
from torch import nn

from training.backends import torch_runner
from training.data.folder import Images, Series
from training.evaluate import roc_auc, series_scores
from training.models import TriageNet, build_model
from training.train import TrainConfig, train


def test_a_fourth_downsampling_halves_the_activation_map_again():
    four = TriageNet(3, (4, 4, 4, 4, 4), downsamplings=4).eval()
    assert four.stride == 16 and four(torch.rand(2, 3, 64, 64))[1].shape == (2, 4, 4)
    assert TriageNet(3, (4, 4, 4, 4)).stride == 8
    assert build_model(four.config).config == four.config
    old = {"in_channels": 3, "widths": [4, 4, 4, 4]}  # a checkpoint from before the option
    assert build_model(old).stride == 8
    with pytest.raises(ValueError, match="downsamplings must be 1-4 for 4 stages, got 5"):
        TriageNet(3, (4, 4, 4, 4), downsamplings=5)


def series(rng: np.random.Generator, index: int, label: int) -> Series:
    """Four 16x16 images; a positive series has one bright square in its second image."""
    inputs = rng.normal(0.3, 0.05, (4, 3, 16, 16)).astype(np.float32)
    labels = np.zeros(4, np.int64)
    if label:
        inputs[1, :, 5:9, 5:9] += 0.5
        labels[1] = 1
    return Series(patient_id=f"P{index}", study_uid=f"1.{index}", series_uid=f"2.{index}", scanner="s", label=label,
                  attributes={}, sop_uids=[f"3.{index}.{k}" for k in range(4)], image_labels=labels, inputs=inputs,
                  context=np.arange(4)[:, None], masks=None, drift={})


@pytest.mark.parametrize("keep_last", [True, False])
def test_the_returned_weights_are_the_last_epochs_or_the_best_by_validation_loss(keep_last):
    rng = np.random.default_rng(5)
    train_set = [series(rng, i, i % 2) for i in range(8)]
    val_set = [series(rng, 100 + i, i % 2) for i in range(4)]
    cfg = TrainConfig(seed=2, epochs=4, batch_size=4, patience=1, min_epochs=1, widths=(4, 4, 4, 4),
                      negatives_per_positive=1.0, keep_last=keep_last)
    model, history = train(train_set, val_set, cfg, np.max)
    if keep_last:
        assert len(history) == cfg.epochs  # patience 1 stops nothing
    val = Images(val_set)
    with torch.no_grad():
        loss = float(nn.BCEWithLogitsLoss()(model.logit(torch.from_numpy(val.take(np.arange(len(val))))),
                                            torch.from_numpy(val.labels.astype(np.float32))))
    kept = history[-1] if keep_last else min(history, key=lambda r: r["val_loss"])
    assert loss == pytest.approx(kept["val_loss"], abs=1e-5)
    # The validation AUC comes from the same pass's image scores, as the box would aggregate them.
    auc = roc_auc(np.array([s.label for s in val_set]), series_scores(torch_runner(model), val_set, np.max))
    assert auc == pytest.approx(kept["val_series_auc"], abs=1e-5)

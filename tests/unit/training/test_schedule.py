"""The model's downsampling depth and the fixed schedule that keeps the last weights."""

import numpy as np
import pytest
import torch
from torch import nn

import training.train
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


def test_averaged_weights_are_the_mean_of_the_last_epochs_with_batchnorm_measured_on_them(monkeypatch):
    rng = np.random.default_rng(7)
    train_set = [series(rng, i, i % 2) for i in range(8)]
    val_set = [series(rng, 100 + i, i % 2) for i in range(4)]
    snapshots: list[dict[str, torch.Tensor]] = []
    measure = training.train._recalibrate_batchnorm

    def watched(model, *args, **kwargs):  # called after every epoch, and once more on the mean
        snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
        measure(model, *args, **kwargs)
        snapshots[-1].update({k: v.clone() for k, v in model.named_buffers()})

    monkeypatch.setattr(training.train, "_recalibrate_batchnorm", watched)
    cfg = TrainConfig(seed=3, epochs=4, batch_size=4, widths=(4, 4, 4, 4), negatives_per_positive=1.0, keep_last=True,
                      average_last=3)
    model, history = train(train_set, val_set, cfg, np.max)
    assert len(history) == 4 and len(snapshots) == 5
    kept = dict(model.named_parameters())
    for name, value in kept.items():
        mean = sum(s[name].double() for s in snapshots[1:4]) / 3
        torch.testing.assert_close(value.detach(), mean.float(), rtol=0, atol=1e-7)
    assert any(not torch.equal(kept[n].detach(), snapshots[3][n]) for n in kept)  # not the last epoch's
    for name, value in model.named_buffers():  # statistics measured again, for the mean
        if name.endswith("running_mean"):
            torch.testing.assert_close(value, snapshots[4][name])
            assert not torch.equal(value, snapshots[3][name])


def test_averaging_needs_the_fixed_schedule_and_fits_in_it():
    with pytest.raises(ValueError, match="average_last needs train.keep_last"):
        TrainConfig(epochs=4, average_last=2)
    with pytest.raises(ValueError, match=r"average_last must be 1-4 \(the epochs\), got 5"):
        TrainConfig(epochs=4, keep_last=True, average_last=5)

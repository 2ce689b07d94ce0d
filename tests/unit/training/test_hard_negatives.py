"""The epoch sampler: hard negatives (those the model last scored as positive) are drawn
in proportion to that score; with no hard share the draw is the plain uniform one."""

import numpy as np

from training.train import TrainConfig, _epoch_indices, _merge_hardness


def test_hard_share_draws_the_negatives_the_model_scores_high():
    labels = np.array([1] * 10 + [0] * 1000)
    hardness = np.zeros(len(labels))
    hardness[10:20] = 0.99  # ten negatives the model currently flags
    cfg = TrainConfig(seed=3, negatives_per_positive=2.0, batch_size=4, hard_negative_share=0.5)
    order = _epoch_indices(labels, cfg, epoch=1, hardness=hardness)
    assert len(order) == len(set(order)) == 10 + 20
    assert set(range(10)) <= set(order) and set(range(10, 20)) <= set(order)
    uniform = _epoch_indices(labels, TrainConfig(seed=3, negatives_per_positive=2.0, batch_size=4), epoch=1)
    assert len(set(uniform) & set(range(10, 20))) < 10  # uniform draws do not single them out


def test_without_a_hard_share_the_draw_ignores_hardness():
    labels = np.array([1] * 5 + [0] * 200)
    cfg = TrainConfig(seed=9, negatives_per_positive=3.0, batch_size=4)
    assert np.array_equal(_epoch_indices(labels, cfg, 2), _epoch_indices(labels, cfg, 2, hardness=np.ones(205)))


def test_hardness_keeps_the_last_score_of_images_not_seen_this_epoch():
    seen = np.array([0.0, 1.25, 0.0, 1.0])  # score + 1 where seen
    assert np.allclose(_merge_hardness(np.array([0.5, 0.5, 0.9, 0.5]), seen, world=1), [0.5, 0.25, 0.9, 0.0])

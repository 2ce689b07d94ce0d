"""Scoring from DICOM as the box does, and the stability perturbations."""

import numpy as np
import pytest

from appliance.models.manifest import Aggregation, InputSpec, Window
from appliance.triage.decode import decode_instance
from appliance.triage.pipeline import model_input
from appliance.triage.preprocess import HEAD_CT_WINDOWS
from training.data.ct_synth import CT_IMAGE_STORAGE, CTConfig, generate_ct_dataset
from training.data.folder import load_folder
from training.score import STABILITY, _noisy, relative_change, score_all, score_series, series_tensors

SPEC = InputSpec(kind="ct_slice", modalities=["CT"], body_part="HEAD", sop_class_uids=[CT_IMAGE_STORAGE], channels=3,
                 size=16, windows=[Window.from_tuple(w) for w in HEAD_CT_WINDOWS], slab_mm=5.0)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    generate_ct_dataset(CTConfig(n_patients=1, seed=2, matrix=48, thicknesses_mm=(2.5,), coverage_mm=(40.0, 40.0)), out)
    return sorted(out.rglob("*.dcm"))


def test_the_tensor_is_the_one_the_trainers_loader_and_the_box_build(series):
    clean, noisy = series_tensors(SPEC, list(reversed(series)))  # any file order
    assert noisy is None
    loaded = load_folder(series[0].parents[2], SPEC, workers=1)[0]
    np.testing.assert_array_equal(clean, loaded.inputs)


def test_noise_is_one_hu_per_pixel_and_the_same_whatever_the_order(series):
    image = decode_instance(series[0])[0]
    noisy = _noisy(image, 1.0, seed=7)
    hu = lambda im: im.pixels.astype(np.float64) * im.slope + im.intercept  # noqa: E731
    diff = hu(noisy) - hu(image)
    assert abs(diff.std() - 1.0) < 0.05 and abs(diff.mean()) < 0.05
    np.testing.assert_array_equal(noisy.pixels, _noisy(image, 1.0, seed=7).pixels)
    assert not np.array_equal(noisy.pixels, _noisy(image, 1.0, seed=8).pixels)
    _, first = series_tensors(SPEC, series, noise=1.0, seed=7)
    _, again = series_tensors(SPEC, list(reversed(series)), noise=1.0, seed=7)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, series_tensors(SPEC, series)[0])
    assert model_input(SPEC, noisy).shape == (3, 16, 16)


def test_relative_change_is_of_the_order_asked():
    x = np.full((4, 3, 8, 8), 0.5, np.float32)
    y = relative_change(x, 1e-6, seed=1)
    ratio = (y / x - 1).astype(np.float64)
    assert 1e-7 < np.abs(ratio).max() < 1e-5 and y.dtype == np.float32


def test_score_series_gives_every_runner_and_perturbation_a_series_score(series):
    calls = []

    def runner(x):
        calls.append(x.shape[0])
        return x.mean(axis=(1, 2, 3)), np.zeros((len(x), 2, 2), np.float32)

    scored = score_series(SPEC, Aggregation(method="max"), series, {"a": runner, "b": runner}, STABILITY, seed=3)
    clean = series_tensors(SPEC, series)[0]
    assert scored.scores["a"] == scored.scores["b"] == pytest.approx(float(clean.mean(axis=(1, 2, 3)).max()))
    assert set(scored.perturbed) == {"noise", "relative"} and set(scored.perturbed["noise"]) == {"a", "b"}
    assert scored.perturbed["relative"]["a"] == pytest.approx(scored.scores["a"], rel=1e-5)
    assert scored.key_image == int(np.argmax(clean.mean(axis=(1, 2, 3))))


def test_score_all_decodes_ahead_but_keeps_the_order(tmp_path):
    generate_ct_dataset(CTConfig(n_patients=3, seed=6, matrix=32, thicknesses_mm=(5.0,), coverage_mm=(30.0, 30.0)),
                        tmp_path)
    series = [sorted(p.glob("*.dcm")) for p in sorted(tmp_path.glob("*/CT"))]

    def runner(x):
        return x.mean(axis=(1, 2, 3)), np.zeros((len(x), 2, 2), np.float32)

    aggregation = Aggregation(method="max")
    together = score_all(SPEC, aggregation, series, {"a": runner}, STABILITY, seed=1)
    assert [s.scores for s in together] == [score_series(SPEC, aggregation, p, {"a": runner}, STABILITY, seed=1).scores
                                            for p in series]
    assert len({s.scores["a"] for s in together}) == 3

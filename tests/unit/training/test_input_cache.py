"""The trainer's input cache: the box's inputs for the training series, float16, thinned."""

import numpy as np
import pytest

from appliance.models.manifest import InputSpec, Window
from appliance.triage.preprocess import HEAD_CT_WINDOWS
from training.data.ct_synth import CT_IMAGE_STORAGE, CTConfig, generate_ct_dataset
from training.data.folder import Images, load_folder, series_jobs
from training.data.input_cache import cache_dir, cache_inputs, thinned

SPEC = InputSpec(kind="ct_slice", modalities=["CT"], body_part="HEAD", sop_class_uids=[CT_IMAGE_STORAGE], channels=3,
                 size=16, windows=[Window.from_tuple(w) for w in HEAD_CT_WINDOWS], slab_mm=5.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    generate_ct_dataset(CTConfig(n_patients=4, seed=9, matrix=48, thicknesses_mm=(1.25, 5.0), coverage_mm=(60.0, 60.0),
                                 positive_fraction=0.5), out)
    return out


def test_cached_inputs_are_the_loaders_to_float16_precision(dataset):
    jobs = series_jobs(dataset, SPEC)
    assert {j.patient_id for j in jobs} == {f"CTSYN{i:05d}" for i in range(4)} and all(j.scanner for j in jobs)
    cached = cache_inputs(jobs, cache_dir(dataset, SPEC), workers=1, log=lambda line: None)
    loaded = {s.series_uid: s for s in load_folder(dataset, SPEC, workers=1)}
    assert [c.series_uid for c in cached] == [j.series_uid for j in jobs]
    for c in cached:
        s, arrays = loaded[c.series_uid], c.load()
        assert arrays["inputs"].dtype == np.float16 and arrays["inputs"].shape == s.inputs.shape
        np.testing.assert_allclose(arrays["inputs"].astype(np.float32), s.inputs, atol=5e-4)
        np.testing.assert_array_equal(arrays["image_labels"], s.image_labels)
        assert c.label == s.label and c.attributes == s.attributes and c.patient_id == s.patient_id
        assert c.drift == s.drift


def test_thinning_keeps_one_image_per_step_of_thin_series_only(dataset):
    assert thinned(10, 1.25, 2.5).tolist() == [0, 2, 4, 6, 8] and thinned(5, 5.0, 2.5).tolist() == [0, 1, 2, 3, 4]
    assert thinned(4, 0.625, None).tolist() == [0, 1, 2, 3]
    jobs = series_jobs(dataset, SPEC)
    whole = {c.series_uid: c.load() for c in cache_inputs(jobs, cache_dir(dataset, SPEC), workers=1, log=lambda line: None)}
    folder = cache_dir(dataset, SPEC, 2.5)
    assert folder != cache_dir(dataset, SPEC)
    for job, c in zip(jobs, cache_inputs(jobs, folder, 2.5, workers=1, log=lambda line: None)):
        step = 2 if job.thickness_mm == 1.25 else 1
        arrays = c.load()
        np.testing.assert_array_equal(arrays["inputs"], whole[job.series_uid]["inputs"][::step])
        assert arrays["context"].tolist() == [[i] for i in range(len(arrays["inputs"]))] and c.images == len(arrays["inputs"])
    assert {j.thickness_mm for j in jobs} == {1.25, 5.0}


def test_only_the_series_asked_for_are_cached_and_a_second_call_keeps_them(dataset, tmp_path):
    jobs = series_jobs(dataset, SPEC)
    folder = tmp_path / "inputs"
    cache_inputs(jobs[:2], folder, workers=1, log=lambda line: None)
    assert sorted(p.name for p in folder.glob("*.npz")) == sorted(f"{j.series_uid}.npz" for j in jobs[:2])
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    lines = []
    cache_inputs(jobs[:2], folder, workers=1, log=lines.append)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == before and not lines
    assert cache_dir(dataset, SPEC.model_copy(update={"size": 24})) != cache_dir(dataset, SPEC)


def test_images_from_the_cache_are_the_series_in_one_array_and_give_float32_batches(dataset):
    cached = cache_inputs(series_jobs(dataset, SPEC), cache_dir(dataset, SPEC), workers=1, log=lambda line: None)
    images = Images.from_cached(cached)
    assert images.slices.dtype == np.float16 and images.series_sizes.tolist() == [c.images for c in cached]
    loaded = [c.load() for c in cached]
    assert np.array_equal(images.slices, np.concatenate([a["inputs"] for a in loaded]))
    assert np.array_equal(images.labels, np.concatenate([a["image_labels"] for a in loaded]))
    assert images.series_labels.tolist() == [c.label for c in cached]
    second = images.context[cached[0].images:cached[0].images + cached[1].images]
    assert np.array_equal(second, loaded[1]["context"] + cached[0].images)  # contexts index the one array
    batch = images.take(np.array([0, 3]))
    assert batch.dtype == np.float32 and batch.shape == (2, 3, 16, 16)
    assert images.take_masks(np.array([1])).dtype == np.float32

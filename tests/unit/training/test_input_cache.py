"""The trainer's input cache: the box's inputs, kept as float16, thinned on request."""

import numpy as np
import pytest

from appliance.models.manifest import InputSpec, Window
from appliance.triage.preprocess import HEAD_CT_WINDOWS
from training.data.ct_synth import CT_IMAGE_STORAGE, CTConfig, generate_ct_dataset
from training.data.folder import Images, load_folder
from training.data.input_cache import cache_dir, cache_inputs, read_cached

SPEC = InputSpec(kind="ct_slice", modalities=["CT"], body_part="HEAD", sop_class_uids=[CT_IMAGE_STORAGE], channels=3,
                 size=16, windows=[Window.from_tuple(w) for w in HEAD_CT_WINDOWS], slab_mm=5.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    generate_ct_dataset(CTConfig(n_patients=4, seed=9, matrix=48, thicknesses_mm=(1.25, 5.0), coverage_mm=(60.0, 60.0),
                                 positive_fraction=0.5), out)
    return out


def test_cached_inputs_are_the_loaders_to_float16_precision_with_their_files(dataset):
    folder = cache_inputs(dataset, SPEC, workers=1, log=lambda line: None)
    assert folder == cache_dir(dataset, SPEC)
    cached = {s.series_uid: s for s in read_cached(folder)}
    loaded = {s.series_uid: s for s in load_folder(dataset, SPEC, workers=1)}
    assert cached.keys() == loaded.keys()
    for uid, s in loaded.items():
        c = cached[uid]
        arrays = c.load()
        assert arrays["inputs"].dtype == np.float16 and arrays["inputs"].shape == s.inputs.shape
        np.testing.assert_allclose(arrays["inputs"].astype(np.float32), s.inputs, atol=5e-4)
        np.testing.assert_array_equal(arrays["image_labels"], s.image_labels)
        assert c.label == s.label and c.attributes == s.attributes and c.patient_id == s.patient_id
        assert sorted(p.name for p in c.files) == sorted(f"IM{i + 1:04d}.dcm" for i in range(c.images))
        assert all(p.is_file() for p in c.files)


def test_thinning_keeps_one_image_per_step_of_thin_series_only(dataset):
    series = read_cached(cache_inputs(dataset, SPEC, workers=1, log=lambda line: None))
    for s in series:
        thinned = s.load(thin_mm=2.5)
        step = 2 if s.thickness_mm == 1.25 else 1
        assert len(thinned["inputs"]) == len(range(0, s.images, step))
        np.testing.assert_array_equal(thinned["inputs"], s.load()["inputs"][::step])
        assert thinned["context"].tolist() == [[i] for i in range(len(thinned["inputs"]))]
    assert {s.thickness_mm for s in series} == {1.25, 5.0}


def test_a_second_call_keeps_what_is_cached(dataset):
    folder = cache_inputs(dataset, SPEC, workers=1, log=lambda line: None)
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    lines = []
    cache_inputs(dataset, SPEC, workers=1, log=lines.append)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == before and not lines
    other = SPEC.model_copy(update={"size": 24})
    assert cache_dir(dataset, other) != folder


def test_images_from_cached_arrays_give_float32_batches(dataset):
    series = read_cached(cache_inputs(dataset, SPEC, workers=1, log=lambda line: None))
    images = Images.from_arrays([s.load() for s in series], [s.label for s in series])
    assert images.slices.dtype == np.float16 and images.series_sizes.tolist() == [s.images for s in series]
    batch = images.take(np.array([0, 3]))
    assert batch.dtype == np.float32 and batch.shape == (2, 3, 16, 16)
    assert images.take_masks(np.array([1])).dtype == np.float32

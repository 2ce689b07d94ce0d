"""Instances prepared as they arrive give the same series inputs as preparing the whole
series at completion, and the cache keeps exactly what is still valid, within its bound.

The series mixes single-frame slices in four transfer syntaxes (explicit little endian,
RLE, JPEG-LS and JPEG 2000 lossless) with a multi-frame instance, under a spec with a
slab and context (so assembly depends on the whole series); arrival orders are shuffled.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.jobs import StoredFile
from appliance.models.manifest import InputSpec, Manifest
from appliance.triage import pipeline
from appliance.triage.decode import read_header
from appliance.triage.prepared import PreparedCache, PreparedInstance
from tests.helpers.inputs import SERIES, manifest_for, mixed_series
from training.demo import head_ct

SLICE = InputSpec.model_validate({**head_ct(quick=True).input.model_dump(), "context_slices": 1, "channels": 12})


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> list[Path]:
    return mixed_series(tmp_path_factory.mktemp("series"))


def arrived(m: Manifest, path: Path) -> PreparedInstance:
    return PreparedInstance(read_header(path), pipeline.prepare_instance(m, path))


def stored(paths: list[Path]) -> tuple[StoredFile, ...]:
    return tuple(StoredFile(path, "", path.name) for path in paths)  # the name stands in for the sha256


def assert_same(a, b) -> None:
    assert a.inputs.dtype == b.inputs.dtype and a.inputs.tobytes() == b.inputs.tobytes()
    assert a.origins == b.origins and a.input_sha256 == b.input_sha256 and a.drift_features == b.drift_features


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ahead", [1.0, 0.5])
def test_prepared_on_arrival_is_byte_identical_to_the_whole_series(series, seed, ahead):
    m = manifest_for(SLICE)
    arrival = random.Random(seed).sample(series, len(series))
    cache, key = PreparedCache(64 * 1024 * 1024), pipeline.input_key(m.input)
    files = stored(arrival)
    for one in files[: round(ahead * len(files))]:  # what arrived before the worker's job
        assert cache.missing(SERIES, key, files)[0] == one
        cache.keep(SERIES, key, one, arrived(m, one.path))

    ready = cache.ready(SERIES, key, files)
    assert len(ready) == round(ahead * len(files)) and cache.complete(SERIES, files) == (ahead == 1.0)
    on_arrival = pipeline.prepare(m, arrival, ready)

    assert_same(on_arrival, pipeline.prepare(m, arrival))
    assert on_arrival.inputs.shape == (15, 12, SLICE.size, SLICE.size)
    # Slice order, not arrival order: the same tensor whatever order the files came in.
    assert on_arrival.inputs.tobytes() == pipeline.prepare(m, series).inputs.tobytes()
    assert len(set(on_arrival.origins)) == 15  # 12 slices and the 3 frames of one instance


def test_a_replaced_instance_is_prepared_again_and_only_it(series):
    m = manifest_for(SLICE)
    cache, key = PreparedCache(64 * 1024 * 1024), pipeline.input_key(m.input)
    files = stored(series)
    for one in files:
        cache.keep(SERIES, key, one, arrived(m, one.path))
    replaced = StoredFile(files[4].path, "", "other bytes")
    now = files[:4] + (replaced,) + files[5:]
    assert cache.missing(SERIES, key, now) == [replaced]
    assert set(cache.ready(SERIES, key, now)) == {f.path for f in files} - {files[4].path}
    # The old copy was forgotten; so is an instance no longer in the series, with its bytes.
    before = cache.nbytes
    assert cache.missing(SERIES, key, now[1:]) == [replaced]
    assert cache.nbytes < before and files[0].path not in cache.ready(SERIES, key, files)


def test_another_input_key_drops_the_series_the_same_key_keeps_it(series):
    m = manifest_for(SLICE)
    key = pipeline.input_key(m.input)
    # A model whose slab and context differ prepares each image alike: the same key.
    assembled_only = InputSpec.model_validate({**SLICE.model_dump(), "slab_mm": 2.0, "context_slices": 0,
                                               "channels": 4})
    assert pipeline.input_key(assembled_only) == key
    larger = InputSpec.model_validate({**SLICE.model_dump(), "size": 48})
    assert pipeline.input_key(larger) != key

    cache, files = PreparedCache(64 * 1024 * 1024), stored(series)
    other = "1.2.3.other"
    for one in files[:3]:
        cache.keep(SERIES, key, one, arrived(m, one.path))
        cache.keep(other, key, one, arrived(m, one.path))
    assert cache.missing(SERIES, key, files) == list(files[3:])
    assert cache.missing(SERIES, pipeline.input_key(larger), files) == list(files)  # activation: prepared anew
    assert cache.ready(SERIES, key, files) == {}
    assert len(cache.ready(other, key, files)) == 3  # the series it did not touch keeps its images


def test_the_bound_evicts_the_least_recently_touched_series_and_refuses_one_too_big(series):
    m = manifest_for(SLICE)
    key, files = pipeline.input_key(m.input), stored(series)
    one = arrived(m, files[0].path)
    size = one.nbytes
    cache = PreparedCache(3 * size)
    for uid in ("a", "b", "c"):
        assert cache.keep(uid, key, files[0], one)
    cache.keep("a", key, files[1], None)  # something arrived for "a": "b" is now the oldest
    assert cache.keep("d", key, files[0], one)
    assert cache.series() == {"a", "c", "d"} and cache.nbytes == 3 * size

    for f in files[:3]:
        assert cache.keep("e", key, f, arrived(m, f.path))
    assert not cache.keep("e", key, files[3], arrived(m, files[3].path))
    assert cache.nbytes <= 3 * size and cache.ready("e", key, files) == {}
    assert cache.missing("e", key, files) == [] and cache.complete("e", files)  # left to its job


def test_an_unreadable_instance_is_not_tried_again_and_retain_forgets_the_rest(series):
    key, files = "k", stored(series)
    cache = PreparedCache(1024 * 1024)
    cache.keep(SERIES, key, files[0], None)
    assert files[0] not in cache.missing(SERIES, key, files) and cache.ready(SERIES, key, files) == {}
    cache.retain(set())
    assert cache.series() == set() and cache.nbytes == 0


def test_a_zero_bound_prepares_nothing_ahead(series):
    assert PreparedCache(0).missing(SERIES, "k", stored(series)) == []
    assert PreparedCache(0).complete(SERIES, stored(series))


def test_the_audit_hash_follows_every_input_byte_slice_position_and_the_thickness(series):
    m = manifest_for(SLICE)
    prepared = [(path, pipeline.prepare_instance(m, path)) for path in series]
    base = pipeline.assemble(m, prepared)
    assert pipeline.assemble(m, prepared[::-1]).input_sha256 == base.input_sha256  # arrival order is no input
    images = sorted((image for _, frames in prepared for image in frames), key=lambda image: image.position)
    header = images[0].header
    assert pipeline.input_sha256(images, header) == base.input_sha256

    touched = images[0].input.copy()
    touched[0, 5, 7] = np.nextafter(touched[0, 5, 7], np.float32(2))  # one bit of one pixel
    thicker = header.copy()
    thicker.SliceThickness = 9.0
    hashes = {
        base.input_sha256,
        pipeline.input_sha256([replace(images[0], digest=hashlib.sha256(touched.tobytes()).digest()), *images[1:]],
                              header),
        pipeline.input_sha256([replace(images[0], position=images[0].position - 0.01), *images[1:]], header),
        pipeline.input_sha256(images, thicker),
    }
    assert len(hashes) == 4
    assert images[0].digest == hashlib.sha256(images[0].input.tobytes()).digest() != hashlib.sha256(
        touched.tobytes()).digest()

"""Instances prepared as they arrive give the same series inputs as preparing the whole
series at completion, and the cache keeps exactly what is still valid, within its bound.

The series mixes single-frame slices in four transfer syntaxes (explicit little endian,
RLE, JPEG-LS and JPEG 2000 lossless) with a multi-frame instance, under a spec with a
slab and context (so assembly depends on the whole series); arrival orders are shuffled.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from appliance.jobs import StoredFile
from appliance.models.manifest import FileEntry, InputSpec, Manifest, public_key_b64
from appliance.triage import pipeline
from appliance.triage.decode import read_header
from appliance.triage.prepared import PreparedCache, PreparedInstance
from training.demo import head_ct

SLICE = InputSpec.model_validate({**head_ct(quick=True).input.model_dump(), "context_slices": 1, "channels": 12})
SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless)
SERIES = "1.2.826.0.1.3680043.10.1.22"


def manifest(spec: InputSpec) -> Manifest:
    """A valid manifest whose input is ``spec``."""
    listed = ("model.onnx", "golden.npz", "drift.json", "card.md")
    return Manifest.model_validate({
        "format_version": 1, "id": "prepared", "version": "0.0.1", "task": "binary-triage", "finding": "test",
        "labels": ["absent", "present"], "input": spec.model_dump(), "outputs": {"cam_size": 4},
        "aggregation": {"method": "max"},
        "operating_point": {"threshold": 0.5, "target_sensitivity": 0.9, "validation_sensitivity": 0.9,
                            "validation_specificity": 0.9},
        "variants": [{"backend": "onnxruntime", "precision": "fp32", "files": ["model.onnx"], "test_auc": 0.9,
                      "tolerance": {"score_atol": 1e-4, "cam_atol": 1e-3}}],
        "golden": "golden.npz", "drift_reference": "drift.json", "model_card": "card.md",
        "files": [FileEntry(path=name, size=0, sha256="0" * 64).model_dump() for name in listed],
        "signing_public_key": public_key_b64(Ed25519PrivateKey.generate().public_key()),
        "created": "2026-12-06T00:00:00Z",
    })


def instance(z: float, pixels: np.ndarray, syntax: str, intercept: float) -> Dataset:
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.826.0.1.3680043.10.1.2", SERIES, "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, z], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
    ds.PixelData = pixels.astype(np.int16).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    return ds


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> list[Path]:
    """Twelve single-frame slices 1 mm apart in four transfer syntaxes, and a three-frame
    instance beyond them (frames at 12, 13, 14 mm), each file named in no slice order."""
    folder = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(22)
    datasets = [instance(float(z), rng.integers(0, 2000, (48, 40)), SYNTAXES[z % 4], -1024.0 + 10 * z)
                for z in range(12)]
    datasets.append(instance(12.0, rng.integers(0, 2000, (3, 48, 40)), RLELossless, -1000.0))
    paths = []
    for n, ds in enumerate(datasets):
        paths.append(folder / f"{(n * 7) % 13:02d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


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
    m = manifest(SLICE)
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
    m = manifest(SLICE)
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
    m = manifest(SLICE)
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
    m = manifest(SLICE)
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

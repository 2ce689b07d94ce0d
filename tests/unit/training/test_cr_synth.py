import csv
import hashlib
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from appliance.triage.preprocess import normalize_radiograph
from training.data.cr_synth import (
    CR_IMAGE_STORAGE,
    CR_STYLES,
    LABEL_COLUMNS,
    CRConfig,
    bilinear,
    detector_image,
    generate_cr_dataset,
)
from training.datasets import content_sha256
from training.indication import PTX_MIN_RIM_MM


@pytest.fixture(scope="module")
def cr_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cr")
    return out, generate_cr_dataset(CRConfig(n_patients=9, seed=3, columns=(96, 96)), out)


def test_one_valid_cr_image_per_study(cr_dir):
    out, truths = cr_dir
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == len(truths) == 9
    seen = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == CR_IMAGE_STORAGE and ds.Modality == "CR" and ds.BodyPartExamined == "CHEST"
        assert int(ds.pixel_array.max()) < 2 ** ds.BitsStored
        seen.add((ds.ManufacturerModelName, ds.PhotometricInterpretation))
    assert seen == {(s.model, s.photometric) for s in CR_STYLES}


def test_labels_and_monochrome1_lungs_are_dark_after_normalising(cr_dir):
    out, truths = cr_dir
    with open(out / "labels.csv") as f:
        rows = {r["series_instance_uid"]: r for r in csv.DictReader(f)}
    assert {int(rows[t.series_uid]["label"]) for t in truths} == {0, 1}
    for f in out.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        img = normalize_radiograph(ds.pixel_array, ds.PhotometricInterpretation)
        h, w = img.shape
        lung = img[int(0.35 * h), int(0.25 * w)]
        spine = img[int(0.35 * h), w // 2 - 4:w // 2 + 4].max()
        assert lung < spine, ds.PhotometricInterpretation  # dense is bright whatever the vendor stored


def test_all_positive_config_gives_findings_classed_by_their_rim(tmp_path):
    a = generate_cr_dataset(CRConfig(n_patients=12, seed=11, columns=(64, 64), positive_fraction=1.0), tmp_path / "a")
    assert all(t.label == 1 and 4 <= t.rim_mm <= 50 for t in a)
    assert all(t.indication == ("in-indication" if t.rim_mm >= PTX_MIN_RIM_MM else "sub-indication") for t in a)
    with open(tmp_path / "a" / "labels.csv") as f:
        rows = {r["series_instance_uid"]: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values())))[2:] == list(LABEL_COLUMNS)
    assert all(float(rows[t.series_uid]["rim_mm"]) == pytest.approx(t.rim_mm, abs=5e-4) for t in a)


def test_dciodvfy_finds_no_errors(cr_dir):
    out, _ = cr_dir
    assert shutil.which("dciodvfy")
    for f in sorted(out.rglob("*.dcm"))[:3]:
        res = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=30)
        report = res.stdout + res.stderr
        assert "CRImage" in report and "Error" not in report, report



def test_the_detector_gives_the_same_bits_on_every_cpu():
    """The chest sealed set is registered by its content hash, and the machines that
    regenerate it differ (AVX2, AVX-512, AMX): the detector step must give the same bits on
    each. The pinned digest was taken on a Xeon with AMX and AVX-512; the same code gives it
    on an AVX2-only EPYC or fails here."""
    digest = hashlib.sha256()
    for style in CR_STYLES:
        stored = detector_image(np.random.default_rng(5).random((48, 40)), 2.0, (300, 250), style,
                           np.random.default_rng(7))
        digest.update(stored.tobytes())
    assert digest.hexdigest() == "f65fea3b21a045664113d0d64904a2b51baf4f135b372d9f774b179ecfdb6466"


def test_bilinear_aligns_pixel_centres_and_clamps_at_the_edges():
    img = np.add.outer(4.0 * np.arange(3), np.arange(4.0))  # 4 * row + column: a plane
    out = bilinear(img, (6, 8))
    centre = np.maximum((np.arange(6) + 0.5) * 0.5 - 0.5, 0)  # source coordinates, clamped
    assert out.shape == (6, 8)
    assert np.allclose(out, np.add.outer(4 * np.minimum(centre, 2), np.minimum(np.maximum(
        (np.arange(8) + 0.5) * 0.5 - 0.5, 0), 3)))  # a plane is kept exactly
    assert out[0, 0] == img[0, 0] and out[-1, -1] == img[-1, -1]


def test_a_generated_set_is_the_same_bytes_every_time(tmp_path):
    """The UIDs are derived from the seed, the compressed instance's too (pydicom would
    give it a random one), so a regenerated set has the hash it was registered with."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        generate_cr_dataset(CRConfig(n_patients=3, seed=11, columns=(96, 96)), folder, workers=1)
    assert content_sha256(first) == content_sha256(second)
    ds = pydicom.dcmread(next(first.rglob("*.dcm")))
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID

"""A large image is decoded once: preparation keeps its decoded pixels for the key image
(a JPEG-LS chest radiograph costs hundreds of milliseconds to decode), while a CT slice's
are not kept and its key slice is decoded again (2 ms; 200 of them would not fit the cache
so cheaply)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.triage import decide, pipeline
from appliance.triage.decode import decode_instance
from scripts.harness import tcp_env
from tests.helpers.dimse import listener_with_model, queued_series
from tests.helpers.series import ct_dataset
from training.data.cr_synth import CRConfig, generate_cr_dataset


def test_a_radiograph_keeps_its_decoded_pixels_and_a_ct_slice_does_not(tmp_path, quick_packages):
    generate_cr_dataset(CRConfig(n_patients=1, seed=7), tmp_path / "cr", workers=1)
    [radiograph] = sorted((tmp_path / "cr").rglob("*.dcm"))
    registry_dir = tmp_path / "unpacked"
    db = open_database(tmp_path / "db.sqlite")
    registry = ModelRegistry(db, registry_dir, [quick_packages["public_key"]])
    chest = registry.install(quick_packages["chest-cr"], "test").manifest
    head = registry.install(quick_packages["head-ct"], "test").manifest

    [image] = pipeline.prepare_instance(chest, radiograph)
    assert image.decoded is not None and image.decoded.pixels.size >= pipeline.KEEP_DECODED_PIXELS
    assert np.array_equal(image.decoded.pixels, decode_instance(radiograph)[0].pixels)
    assert image.nbytes == image.input.nbytes + image.counts.nbytes + image.decoded.pixels.nbytes
    assert pipeline.kept_decoded({radiograph: [image]}) == {(radiograph, 0): image.decoded}

    ct_slice = tmp_path / "slice.dcm"
    ct_dataset("1.2.3", "1.2.3.4", 0, size=512).save_as(ct_slice, enforce_file_format=True)
    [slice_image] = pipeline.prepare_instance(head, ct_slice)
    assert slice_image.decoded is None
    assert pipeline.kept_decoded({ct_slice: [slice_image]}) == {}


def test_a_radiographs_job_draws_its_key_image_without_decoding_it_again(tmp_path, quick_packages, monkeypatch):
    listener, settings, db, _ = listener_with_model(tmp_path / "data", quick_packages, "chest-cr")
    try:
        generate_cr_dataset(CRConfig(n_patients=1, seed=8), tmp_path / "cr", workers=1)
        [radiograph] = sorted((tmp_path / "cr").rglob("*.dcm"))
        subprocess.run(["storescu", "-xt", "-aec", "TRIAGE", "127.0.0.1", str(listener.port), str(radiograph)],
                       env=tcp_env(), check=True, timeout=120, capture_output=True)
        queued_series(listener, 1)

        decoded_again: list[Path] = []
        original = decide.decode_instance
        monkeypatch.setattr(decide, "decode_instance", lambda path: decoded_again.append(path) or original(path))
        assert Parts(settings).worker(db, name="w").run_once()
        [series] = listener.status()["series"]
        assert series["state"] == "triaged"
        assert decoded_again == []  # the key image came from preparation
        [(sc_uid,)] = db.conn.execute("SELECT sc_instance_uid FROM inference_results").fetchall()
        [(path,)] = db.conn.execute("SELECT path FROM outbox WHERE sop_instance_uid = ?", (sc_uid,)).fetchall()
        capture = pydicom.dcmread(path)  # the capture drawn from the kept pixels, queued for PACS
        assert capture.PhotometricInterpretation == "RGB" and capture.Rows >= 512
    finally:
        listener.stop()

"""The box and the trainer build the same model input tensor from the same DICOM series.

Each case writes one series into a labelled folder and feeds it to the appliance
(``appliance.triage.pipeline.prepare`` with a real, validated Manifest) and to the
trainer (``training.data.folder.load_folder``), then asserts the two tensors are equal
bit for bit. Where the right answer can be built independently (slice order along the
normal, per-instance rescale, multi-frame, MONOCHROME1), it is checked as well, so both
paths agreeing on a wrong tensor also fails.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.models.manifest import InputSpec
from appliance.triage import preprocess
from appliance.triage.pipeline import prepare
from tests.helpers.inputs import manifest_for
from training.data.cr_synth import CR_IMAGE_STORAGE
from training.data.ct_synth import CT_IMAGE_STORAGE
from training.data.folder import Images, Series, load_folder
from training.demo import chest_cr, head_ct

CT = head_ct(quick=True).input
CR = chest_cr(quick=True).input
SIZE = 40  # stored matrix; not the model size, so every case resizes


def image(sop_class: str, series: str, pixels: np.ndarray) -> Dataset:
    """A greyscale instance of ``series`` holding ``pixels`` (int16, 2-D or frames)."""
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.1", series
    ds.PatientID, ds.Modality = "PARITY01", "CT" if sop_class == CT_IMAGE_STORAGE else "CR"
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 5.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.astype(np.int16).tobytes()
    return ds


def save(folder: Path, datasets: list[Dataset], label: int = 1,
         slice_labels: dict[str, int] | None = None) -> list[Path]:
    """Write the instances (in the given order) and a labels.csv for their series."""
    paths = []
    for n, ds in enumerate(datasets):
        paths.append(folder / f"{n:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    series = {str(ds.SeriesInstanceUID) for ds in datasets}
    (folder / "labels.csv").write_text("series_instance_uid,label\n" + "".join(f"{s},{label}\n" for s in series))
    if slice_labels:
        with open(folder / "slice_labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([("sop_instance_uid", "label"), *slice_labels.items()])
    return paths


def both(folder: Path, paths: list[Path], spec: InputSpec) -> tuple[np.ndarray, Series]:
    """The appliance's inputs and the trainer's series for the one series in ``folder``."""
    prepared = prepare(manifest_for(spec), paths)
    box, drift = prepared.inputs, prepared.drift_features
    (trainer,) = load_folder(folder, spec)
    assert trainer.inputs.dtype == box.dtype == np.float32
    assert np.array_equal(trainer.model_inputs(), box), "the trainer and the box built different tensors"
    for name, reference in trainer.drift.items():
        assert drift["histograms"][name] == reference["counts"], f"drift feature {name} differs"
    return box, trainer


def hu_image(level: int) -> np.ndarray:
    """An even-valued HU image (so every slope below stores it exactly) marked by ``level``."""
    y, x = np.mgrid[:SIZE, :SIZE]
    return (2 * ((x + 3 * y) % 40) + level).astype(np.int64)


def test_oblique_series_is_ordered_along_the_normal_and_rescaled_per_instance(tmp_path):
    tilt = np.deg2rad(30.0)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(tilt), -np.sin(tilt)])
    normal = np.cross(row, col)
    # Shifts within the slice plane move IPP[2] but not the position along the normal.
    shifts = [0.0, 40.0, -30.0, 60.0, -10.0, 25.0]
    rescale = [(1.0, -1024.0), (2.0, -1024.0), (0.5, -1000.0), (1.0, 0.0), (2.0, -2000.0), (0.5, -512.0)]
    series, datasets = generate_uid(), []
    for rank, (shift, (slope, intercept)) in enumerate(zip(shifts, rescale)):
        stored = (hu_image(20 * rank) - intercept) / slope
        assert np.array_equal(stored, np.round(stored))
        ds = image(CT_IMAGE_STORAGE, series, stored)
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = list(rank * 4.0 * normal + shift * col)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        datasets.append(ds)
    by_z = sorted(range(len(datasets)), key=lambda k: float(datasets[k].ImagePositionPatient[2]))
    assert by_z != sorted(by_z), "the case must order differently by IPP[2]"
    order = [3, 0, 5, 1, 4, 2]  # files on disk in neither order
    paths = save(tmp_path, [datasets[k] for k in order])

    inputs, trainer = both(tmp_path, paths, CT)

    expected = np.stack([preprocess.ct_slice_input(hu_image(20 * rank), 1.0, 0.0, CT.window_tuples(), CT.size)
                         for rank in range(len(datasets))])
    assert np.array_equal(trainer.inputs, expected)
    assert trainer.sop_uids == [str(ds.SOPInstanceUID) for ds in datasets]


def thin_series(count: int = 12) -> list[Dataset]:
    """An axial series of 1.25 mm slices, slice ``rank`` holding ``hu_image(30 * rank)``."""
    series, datasets = generate_uid(), []
    for rank in range(count):
        ds = image(CT_IMAGE_STORAGE, series, hu_image(30 * rank))
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, 1.25 * rank]
        ds.SliceThickness = 1.25
        datasets.append(ds)
    return datasets


def test_thin_slices_are_averaged_over_the_packages_slab_by_both(tmp_path):
    assert CT.slab_mm == 5.0
    paths = save(tmp_path, thin_series()[::-1])

    _, trainer = both(tmp_path, paths, CT)

    single = np.stack([preprocess.ct_slice_input(hu_image(30 * rank), 1.0, 0.0, CT.window_tuples(), CT.size)
                       for rank in range(12)])
    # A 5 mm slab over 1.25 mm slices: three whole slices and half of one either side.
    middle = (single[3:8].sum(axis=0) - (single[3] + single[7]) / 2) / 4
    np.testing.assert_allclose(trainer.inputs[5], middle, atol=1e-6)
    assert not np.allclose(trainer.inputs[5], single[5], atol=1e-3)


def test_context_stacks_the_slabs_a_slab_away_for_both(tmp_path):
    spec = InputSpec.model_validate({**CT.model_dump(), "context_slices": 1, "channels": 3 * len(CT.windows)})
    paths = save(tmp_path, thin_series())

    inputs, trainer = both(tmp_path, paths, spec)

    slabs = trainer.inputs  # the slab averages, checked against the slices in the test above
    assert inputs.shape == (12, 3 * len(CT.windows), CT.size, CT.size)
    np.testing.assert_array_equal(inputs[6], np.concatenate([slabs[2], slabs[6], slabs[10]]))
    np.testing.assert_array_equal(inputs[0], np.concatenate([slabs[0], slabs[0], slabs[4]]))
    images = Images([trainer, trainer])
    np.testing.assert_array_equal(images.take([18, 0]), inputs[[6, 0]])


def test_multi_frame_instances_give_one_input_per_frame_in_order(tmp_path):
    series = generate_uid()
    frames = {name: np.stack([hu_image(100 * base + 10 * f) for f in range(3)])
              for name, base in (("upper", 2), ("lower", 1))}
    upper = image(CT_IMAGE_STORAGE, series, (frames["upper"] + 1024) // 2)
    upper.RescaleSlope, upper.RescaleIntercept, upper.ImagePositionPatient = 2.0, -1024.0, [0.0, 0.0, 10.0]
    lower = image(CT_IMAGE_STORAGE, series, frames["lower"])
    lower.RescaleSlope, lower.RescaleIntercept, lower.ImagePositionPatient = 1.0, 0.0, [0.0, 0.0, 0.0]
    for ds in (upper, lower):
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    paths = save(tmp_path, [upper, lower], label=1,
                 slice_labels={str(upper.SOPInstanceUID): 1, str(lower.SOPInstanceUID): 0})

    inputs, trainer = both(tmp_path, paths, CT)

    hu = np.concatenate([frames["lower"], frames["upper"]])
    expected = np.stack([preprocess.ct_slice_input(h, 1.0, 0.0, CT.window_tuples(), CT.size) for h in hu])
    assert np.array_equal(trainer.inputs, expected)
    assert trainer.sop_uids == [str(lower.SOPInstanceUID)] * 3 + [str(upper.SOPInstanceUID)] * 3
    assert trainer.image_labels.tolist() == [0, 0, 0, 1, 1, 1]
    slice_count = trainer.drift["slice_count"]
    assert slice_count["counts"] == np.histogram([6], slice_count["edges"])[0].tolist()


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_radiograph(tmp_path, photometric):
    stored = np.random.default_rng(7).integers(0, 4096, (SIZE, SIZE))
    plain = preprocess.radiograph_input(stored, "MONOCHROME2", CR.size)
    ds = image(CR_IMAGE_STORAGE, generate_uid(), stored)
    ds.PhotometricInterpretation = photometric
    paths = save(tmp_path, [ds])

    inputs, _ = both(tmp_path, paths, CR)

    assert inputs.shape == (1, 1, CR.size, CR.size)
    np.testing.assert_allclose(inputs[0], plain if photometric == "MONOCHROME2" else 1.0 - plain, atol=1e-6)


def test_compressed_instance_from_pydicom_test_files(tmp_path):
    compressed, plain = (Path(pydicom.data.get_testdata_file(name))
                         for name in ("MR_small_jp2klossless.dcm", "MR_small.dcm"))
    assert pydicom.dcmread(compressed, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    shutil.copy(compressed, tmp_path / "mr.dcm")
    series = pydicom.dcmread(compressed, stop_before_pixels=True).SeriesInstanceUID
    (tmp_path / "labels.csv").write_text(f"series_instance_uid,label\n{series},0\n")

    inputs, _ = both(tmp_path, [tmp_path / "mr.dcm"], CT)

    lossless_reference = prepare(manifest_for(CT), [plain]).inputs
    assert np.array_equal(inputs, lossless_reference) and inputs.std() > 0

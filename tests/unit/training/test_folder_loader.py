import csv
import shutil

import numpy as np
import pytest

from appliance.models.manifest import InputSpec, Window
from appliance.triage.preprocess import HEAD_CT_WINDOWS
from training.data.ct_synth import CT_IMAGE_STORAGE, CTConfig, generate_ct_dataset
from training.data.folder import load_folder, read_labels, split_by_patient

SPEC = InputSpec(kind="ct_slice", modalities=["CT"], body_part="HEAD", sop_class_uids=[CT_IMAGE_STORAGE], channels=3,
                 size=16, windows=[Window.from_tuple(w) for w in HEAD_CT_WINDOWS])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    truths = generate_ct_dataset(CTConfig(n_patients=6, seed=5, matrix=48, thicknesses_mm=(12.0,), positive_fraction=0.5), out)
    return out, truths


def test_loads_series_with_slice_labels_attributes_and_drift(folder):
    out, truths = folder
    series = load_folder(out, SPEC)
    by_uid = {s.series_uid: s for s in series}
    assert set(by_uid) == {t.series_uid for t in truths}
    for t in truths:
        s = by_uid[t.series_uid]
        assert s.inputs.shape == (len(t.slice_uids), 3, 16, 16) and s.inputs.dtype == np.float32
        assert s.sop_uids == list(t.slice_uids)  # sorted by position, as generated
        np.testing.assert_array_equal(s.image_labels, t.slice_labels)
        assert s.label == t.label and s.attributes["size_group"] == t.size_group
        assert s.attributes["indication"] == t.indication
        assert s.scanner == t.scanner and s.patient_id == t.patient_id
        assert sum(s.drift["slice_count"]["counts"]) == 1
        assert s.masks.shape == (len(t.slice_uids), 1, 32, 32)
        for uid, lesion in zip(s.sop_uids, s.masks):
            expected = t.slice_masks[uid] / 255.0 if uid in t.slice_masks else 0.0
            np.testing.assert_allclose(lesion[0], expected, atol=1e-6)
    assert any(s.masks.max() > 0.5 for s in series)


def test_study_level_labels_without_slice_labels(folder, tmp_path):
    out, truths = folder
    work = tmp_path / "real"
    shutil.copytree(out, work)
    (work / "slice_labels.csv").unlink()
    import pydicom
    study = {t.series_uid: str(pydicom.dcmread(next(p for p in work.rglob("*.dcm") if pydicom.dcmread(p).SeriesInstanceUID == t.series_uid)).StudyInstanceUID) for t in truths[:3]}
    with open(work / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study_instance_uid", "label"])
        for t in truths[:3]:
            w.writerow([study[t.series_uid], t.label])
    (work / "notes.txt").write_text("not dicom")
    series = load_folder(work, SPEC)
    assert {s.series_uid for s in series} == {t.series_uid for t in truths[:3]}
    for s in series:
        assert set(s.image_labels.tolist()) == {s.label}  # weak labels: every slice takes the series label


def test_bad_labels_file_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("uid,label\nx,1\n")
    with pytest.raises(ValueError, match="header"):
        read_labels(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("series_instance_uid,label\n1.2.3,yes\n")
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        read_labels(tmp_path / "labels.csv")


def test_split_is_by_patient_and_deterministic(folder):
    out, _ = folder
    series = load_folder(out, SPEC)
    a = split_by_patient(series, seed=1, fractions=(0.5, 0.25, 0.25))
    b = split_by_patient(series, seed=1, fractions=(0.5, 0.25, 0.25))
    assert {k: [s.series_uid for s in v] for k, v in a.items()} == {k: [s.series_uid for s in v] for k, v in b.items()}
    patients = [{s.patient_id for s in v} for v in a.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert sum(len(v) for v in a.values()) == len(series) and len(a["train"]) == 3


def test_five_way_split_is_patient_disjoint_and_holds_the_external_scanner_out():
    from types import SimpleNamespace

    from training.data.folder import SPLITS

    series = [SimpleNamespace(patient_id=f"P{i // 2:03d}", scanner="X" if i % 8 < 2 else "A", series_uid=str(i))
              for i in range(200)]  # two series per patient; every 4th patient on scanner X
    out = split_by_patient(series, seed=3, fractions=(0.5, 0.1, 0.15, 0.1, 0.15), external_scanner="X")
    assert list(out) == [*SPLITS, "external"]
    assert {s.scanner for s in out["external"]} == {"X"} and len(out["external"]) == 50
    assert all(s.scanner == "A" for name in SPLITS for s in out[name])
    patients = [{s.patient_id for s in out[name]} for name in out]
    assert sum(map(len, patients)) == len(set().union(*patients)) == 100
    assert [len(p) for p in patients[:5]] == [38, 7, 11, 8, 11]  # 75 patients: rounded cumulative fractions
    again = split_by_patient(series, seed=3, fractions=(0.5, 0.1, 0.15, 0.1, 0.15), external_scanner="X")
    assert {k: [s.series_uid for s in v] for k, v in out.items()} == {k: [s.series_uid for s in v] for k, v in again.items()}

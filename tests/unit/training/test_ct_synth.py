import csv
import filecmp
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from appliance.triage.preprocess import to_hu
from training.data import ct_synth
from training.data.ct_synth import CT_IMAGE_STORAGE, CT_STYLES, LABEL_COLUMNS, CTConfig, generate_ct_dataset
from training.indication import head_ct_indication, head_ct_size_group

CFG = CTConfig(n_patients=6, seed=7, matrix=96, thicknesses_mm=(5.0, 10.0), coverage_mm=(100.0, 120.0), positive_fraction=0.6)


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    truths = generate_ct_dataset(CFG, out)
    return out, truths


def test_files_read_back_as_ct_with_rescale(ct_dir):
    out, truths = ct_dir
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == sum(len(t.slice_uids) for t in truths)
    series = {}
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
        assert ds.Modality == "CT" and ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
        assert "RescaleSlope" in ds and "RescaleIntercept" in ds
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    assert set(series) == {t.series_uid for t in truths}
    assert {s[0].ManufacturerModelName for s in series.values()} == {st.model for st in CT_STYLES}
    assert len({float(s[0].PixelSpacing[0]) for s in series.values()}) == len(series)  # spacing (FOV) varies
    assert len({len(s) for s in series.values()}) > 1  # slice count varies
    assert len({float(s[0].SliceThickness) for s in series.values()}) == 2
    for s in series.values():
        assert len({d.StudyInstanceUID for d in s}) == 1 and len({d.SOPInstanceUID for d in s}) == len(s)
        assert str(s[0].PatientName).count("^") == 1 and s[0].PatientBirthDate


def test_hounsfield_values_are_head_like(ct_dir):
    out, truths = ct_dir
    mid = sorted(next(out.rglob("CT")).glob("*.dcm"))
    ds = pydicom.dcmread(mid[len(mid) // 2])
    hu = to_hu(ds.pixel_array, ds.RescaleSlope, ds.RescaleIntercept)
    centre = hu[40:56, 40:56]
    assert hu[0, 0] < -900  # air
    assert hu.max() > 900  # skull
    assert 10 < np.median(centre) < 50  # brain / CSF


def test_labels_files_match_truth_and_positive_slices(ct_dir):
    out, truths = ct_dir
    with open(out / "labels.csv") as f:
        rows = {r["series_instance_uid"]: r for r in csv.DictReader(f)}
    with open(out / "slice_labels.csv") as f:
        slices = {r["sop_instance_uid"]: int(r["label"]) for r in csv.DictReader(f)}
    assert any(t.label for t in truths) and not all(t.label for t in truths)
    assert list(next(iter(rows.values())))[2:] == list(LABEL_COLUMNS)
    for t in truths:
        row = rows[t.series_uid]
        assert int(row["label"]) == t.label == int(t.lesion_type != "none")
        assert not any(slices[u] for u in t.slice_uids) or t.label  # a positive slice only in a series with a finding
        assert row["indication"] == t.indication == head_ct_indication(
            t.lesion_type, t.iph_volume_ml, t.sdh_thickness_mm, t.lesion_hu).value
        assert row["size_group"] == head_ct_size_group(t.lesion_type, t.iph_volume_ml, t.sdh_thickness_mm)
        assert row["lesion_type"] in (("intraparenchymal", "subdural") if t.label else ("none",))
        assert float(row["slice_thickness_mm"]) == t.slice_thickness_mm
        if t.lesion_type == "subdural":
            assert 3 <= t.sdh_thickness_mm <= 14 and t.iph_volume_ml == 0 and 50 <= t.lesion_hu <= 90
        if t.lesion_type == "intraparenchymal":
            assert 0.05 < t.iph_volume_ml < 40 and t.sdh_thickness_mm == 0


def test_lesion_is_in_haemorrhage_range(ct_dir):
    out, truths = ct_dir
    t = next(t for t in truths if t.label)
    labels = dict(zip(t.slice_uids, t.slice_labels))
    pos = [ds for ds in (pydicom.dcmread(f) for f in out.rglob("*.dcm")) if labels.get(ds.SOPInstanceUID) == 1]
    neg = [ds for ds in (pydicom.dcmread(f) for f in out.rglob("*.dcm")) if labels.get(ds.SOPInstanceUID) == 0]
    count = lambda ds: int(((to_hu(ds.pixel_array, ds.RescaleSlope, ds.RescaleIntercept) > 50) &  # noqa: E731
                            (to_hu(ds.pixel_array, ds.RescaleSlope, ds.RescaleIntercept) < 95)).sum())
    assert max(map(count, pos)) > max(map(count, neg[:3]))  # more 50-95 HU pixels where the lesion is


def test_deterministic_from_seed(ct_dir, tmp_path):
    out, truths = ct_dir
    cfg = CTConfig(n_patients=2, seed=CFG.seed, matrix=CFG.matrix, thicknesses_mm=CFG.thicknesses_mm,
                   coverage_mm=CFG.coverage_mm, positive_fraction=CFG.positive_fraction)
    again = generate_ct_dataset(cfg, tmp_path / "again")
    assert again == truths[:2]
    for fresh, first in zip(again, truths):
        assert fresh.slice_masks.keys() == first.slice_masks.keys()
        assert all(np.array_equal(fresh.slice_masks[k], first.slice_masks[k]) for k in first.slice_masks)
    f = next((tmp_path / "again").rglob("IM0001.dcm"))
    assert filecmp.cmp(f, out / f.relative_to(tmp_path / "again"), shallow=False)
    other = generate_ct_dataset(CTConfig(n_patients=1, seed=8, matrix=32), tmp_path / "other")
    assert other[0].series_uid != truths[0].series_uid


def test_dciodvfy_finds_no_errors(ct_dir):
    out, _ = ct_dir
    assert shutil.which("dciodvfy"), "dicom3tools dciodvfy must be installed"
    for f in sorted(out.rglob("IM0002.dcm"))[:3]:
        res = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=30)
        report = res.stdout + res.stderr
        assert "CTImage" in report
        assert "Error" not in report, report


def test_thickness_weights_must_match_the_thicknesses():
    with pytest.raises(ValueError, match="thickness_weights"):
        CTConfig(n_patients=1, seed=1, thicknesses_mm=(1.0, 5.0), thickness_weights=(1.0,))


def _high_pass_noise(folder) -> float:
    """Median over slices of the std of horizontal pixel differences in the brain centre."""
    values = []
    for f in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        hu = to_hu(ds.pixel_array, ds.RescaleSlope, ds.RescaleIntercept)
        centre = hu[40:56, 40:56]
        if 0 < np.median(centre) < 60:
            values.append(np.diff(centre, axis=1).std())
    return float(np.median(values))


def test_thin_slices_are_noisier(tmp_path):
    noise = {}
    for thickness in (0.625, 5.0):
        cfg = CTConfig(n_patients=2, seed=3, matrix=96, thicknesses_mm=(thickness,), coverage_mm=(40.0, 40.0),
                       positive_fraction=0.0)
        generate_ct_dataset(cfg, tmp_path / str(thickness), workers=1)
        noise[thickness] = _high_pass_noise(tmp_path / str(thickness))
    assert 2.0 < noise[0.625] / noise[5.0] < 4.0  # sqrt(5 / 0.625) = 2.8


def test_a_thick_slice_averages_a_small_lesion_over_its_thickness():
    """Partial volume: the same flat 8 mm haemorrhage (3 mm high) is fainter in a 5 mm
    slice than in a 0.625 mm one through its centre, and the thick slice shows less of it."""
    head = ct_synth._Head(a=72, b=90, c=82, skull=6, csf=2, angle=0.0, shift=(0.0, 0.0), brain_hu=33.0, falx_hu=50.0)
    lesion = {"type": "intraparenchymal", "hu": 80.0, "zc": 10.0, "xc": 15.0, "yc": 0.0, "rx": 4.0, "ry": 4.0, "rz": 1.5}
    grid = ct_synth._grid(head, 128, 1.8, np.random.default_rng(0))
    thin, thin_shown, thin_map = ct_synth._render(head, lesion, 10.0, 0.625, grid)
    thick, thick_shown, thick_map = ct_synth._render(head, lesion, 10.0, 5.0, grid)
    empty, nothing, no_map = ct_synth._render(head, None, 10.0, 5.0, grid)
    assert thin_shown > thick_shown and nothing == 0 and no_map is None
    assert thin_map.max() == pytest.approx(1.0) and 0.3 < thick_map.max() < 0.9  # the slab dilutes the occupancy
    assert thin_shown > ct_synth.MIN_SLICE_LESION_MM2
    assert thin.max(where=(thin < 500), initial=-1000) > 75
    assert 45 < (thick - empty).max() + 33 < 70  # lesion contrast diluted by the slab


def test_lesion_maps_sit_where_the_lesion_is_and_only_in_positive_series(ct_dir):
    out, truths = ct_dir
    maps = np.load(out / "slice_masks.npz")
    assert any(t.label for t in truths) and not all(t.label for t in truths)
    for t in truths:
        mapped = [uid for uid in t.slice_uids if uid in maps.files]
        if not t.label:
            assert not mapped
            continue
        # every slice that shows the lesion has a map; a map may also cover a faint tip
        assert {u for u, lab in zip(t.slice_uids, t.slice_labels) if lab} <= set(mapped)
        for uid in mapped:
            m = maps[uid]
            assert m.shape == (ct_synth.MASK_SIDE, ct_synth.MASK_SIDE) and m.dtype == np.uint8 and m.max() > 0


def test_a_lesion_map_is_the_share_of_each_cell():
    occupancy = np.zeros((96, 96), np.float32)
    occupancy[:48, :48] = 1.0  # the top-left quarter
    cells = ct_synth.lesion_map(occupancy, side=4) / 255.0  # resized as inputs are: edges soften
    assert cells[0, 0] == pytest.approx(1.0, abs=0.02) and cells[3, 3] == pytest.approx(0.0, abs=0.02)
    assert cells[:2, :2].min() > 0.7 and cells[2:, :].max() < 0.3 and cells[:, 2:].max() < 0.3
    assert cells.mean() == pytest.approx(0.25, abs=0.02)

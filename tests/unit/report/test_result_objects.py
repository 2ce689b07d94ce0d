"""Result objects: the SR and the heat-map secondary capture built from synthetic sources."""

from __future__ import annotations

import copy
import datetime as dt
from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance import __version__
from appliance.errors import DicomError
from appliance.pixels import resample
from appliance.report import (
    NOT_FOR_DIAGNOSTIC_USE,
    ResultUids,
    build_heatmap_capture,
    build_sr,
    derive_uid,
    device_uid,
    render,
)
from appliance.report.capture import summary_lines
from tests.helpers.series import ct_series, dx_image, header_only, pixels
from tests.helpers.sr import (
    DEVICE_UID,
    SHA,
    WHEN,
    coded_value,
    content_items,
    decision,
    find,
    nodule_decision,
    num_value,
    only,
)

# --- synthetic sources -------------------------------------------------------------------


# --- reading an SR content tree with plain pydicom -----------------------------------------


def encoded(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --- decision and UIDs ---------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    dict(flag=True, score=0.4),
    dict(flag=False, score=0.5),
    dict(score=1.5),
    dict(score=float("nan")),
    dict(threshold=-0.1),
    dict(model_sha256="ABC"),
    dict(model_sha256=SHA.upper()),
    dict(finding_code=("1386000", "SCT")),
    dict(finding_code=("", "SCT", "Intracranial hemorrhage")),
    dict(model_id=""),
    dict(model_version="1\\2"),
    dict(task="x" * 65),
])
def test_decision_refuses_inconsistent_or_malformed_fields(overrides):
    fields = dict(flag=True, score=0.87)
    fields.update(overrides)
    with pytest.raises(ValueError):
        decision(**fields)


def test_flag_at_exactly_the_threshold_is_valid():
    assert decision(flag=True, score=0.5).flag


def test_result_uids_from_key_are_stable_distinct_and_valid():
    first, again, other = ResultUids.from_key("job-7"), ResultUids.from_key("job-7"), ResultUids.from_key("job-8")
    assert first == again
    values = list(vars(first).values())
    assert len(set(values)) == 6
    assert set(values).isdisjoint(vars(other).values())
    assert all(pydicom.uid.UID(v).is_valid and v.startswith("2.25.") for v in values)


def test_derived_uids_depend_on_install_series_and_generation_and_fit_any_root():
    one = ResultUids.derive("2.25", "install-a", "1.2.3", 1)
    assert ResultUids.derive("2.25", "install-a", "1.2.3", 1) == one
    other_box = ResultUids.derive("2.25", "install-b", "1.2.3", 1)
    assert set(vars(one).values()).isdisjoint(vars(other_box).values())
    next_generation = ResultUids.derive("2.25", "install-a", "1.2.3", 2)
    assert next_generation.sr_instance_uid != one.sr_instance_uid
    assert next_generation.sr_series_uid == one.sr_series_uid  # a new version joins the same series
    long_root = "1.2.826.0.1.3680043.10.99999.12345678901"
    uid = derive_uid(long_root, "install-a", "x")
    assert uid.startswith(long_root + ".") and len(uid) <= 64 and pydicom.uid.UID(uid).is_valid
    for bad in ("", "1.02", "1..2", "a.b", "1." + "2" * 40):
        with pytest.raises(ValueError):
            derive_uid(bad, "x")
    assert device_uid("2.25", "install-a") != device_uid("2.25", "install-b")


# --- SR ------------------------------------------------------------------------------------

def comments(sr: Dataset) -> list[str]:
    return [i.TextValue for i in find(sr, "121106", "DCM")]


def test_flagged_sr_gives_the_finding_as_the_reason_for_the_flag():
    source = [header_only(ds) for ds in ct_series()]
    d = decision(True)
    sr = build_sr(source, d, ResultUids.from_key("k"), device_uid=DEVICE_UID)
    assert coded_value(only(sr, "FLAG", "99TRIAGE")) == ("373066001", "SCT")  # Yes
    assert coded_value(only(sr, "FLAGREASON", "99TRIAGE")) == ("1386000", "SCT")
    assert coded_value(only(sr, "121071", "DCM")) == ("1386000", "SCT")  # Finding
    assert num_value(only(sr, "246262008", "SCT")) == pytest.approx(d.score)  # Score
    assert num_value(only(sr, "111071", "DCM")) == pytest.approx(0.5)  # CAD Operating Point
    assert find(sr, "1386000", "SCT") == []  # never "haemorrhage: Present"
    said = " ".join(comments(sr))
    assert "Flagged for priority review; reason for the flag: suspected intracranial haemorrhage" in said
    assert "score 0.870 at or above threshold 0.500" in said and "not a probability" in said
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"


def test_unflagged_sr_does_not_exclude_the_finding_and_names_no_finding():
    source = [header_only(ds) for ds in ct_series()]
    sr = build_sr(source, decision(False), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    assert coded_value(only(sr, "FLAG", "99TRIAGE")) == ("373067005", "SCT")  # No
    assert find(sr, "121071", "DCM") == [] and find(sr, "FLAGREASON", "99TRIAGE") == []
    codes_used = {tuple(coded_value(i)) for i in content_items(sr) if "ConceptCodeSequence" in i}
    assert ("272519000", "SCT") not in codes_used and ("1386000", "SCT") not in codes_used  # no Absent, no finding
    assert any("Not flagged; does not exclude intracranial haemorrhage (score 0.120 below threshold 0.500"
               in text for text in comments(sr))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR


def test_sr_keeps_a_score_with_many_digits_within_ds_limits():
    sr = build_sr([header_only(ct_series(1)[0])], decision(score=0.876543219876), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    assert num_value(only(sr, "246262008", "SCT")) == pytest.approx(0.876543219876, abs=1e-9)


def test_sr_identifies_the_algorithm_and_the_device():
    sr = build_sr([header_only(ct_series(1)[0])], decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    assert only(sr, "111001", "DCM").TextValue == "head-ct-ich"
    assert only(sr, "111003", "DCM").TextValue == "1.2.0"
    parameters = {i.TextValue for i in find(sr, "111002", "DCM")}
    assert parameters == {"threshold=0.500"}  # the package's sha256 is not a parameter: an item of its own
    assert only(sr, "PKGSHA256", "99TRIAGE").TextValue == SHA
    language = only(sr, "121049", "DCM").ConceptCodeSequence[0]
    assert (language.CodeValue, language.CodingSchemeDesignator) == ("en-GB", "RFC5646")
    assert only(sr, "121012", "DCM").UID == DEVICE_UID
    assert sr.Manufacturer == "Triage Appliance"
    assert list(sr.SoftwareVersions) == [__version__, "head-ct-ich 1.2.0"]
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99TRIAGE"


def test_sr_is_in_the_source_study_and_references_every_source_instance():
    source = [header_only(ds) for ds in ct_series()]
    uids = ResultUids.from_key("k")
    sr = build_sr(source, decision(), uids, device_uid=DEVICE_UID)
    first = source[0]
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
                    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "StudyDescription"):
        assert sr[keyword].value == first[keyword].value, keyword
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (uids.sr_series_uid, uids.sr_instance_uid)
    assert sr.SeriesInstanceUID != first.SeriesInstanceUID
    sop_uids = {ds.SOPInstanceUID for ds in source}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence
    assert len(evidence) == 1 and evidence[0].StudyInstanceUID == first.StudyInstanceUID
    series = evidence[0].ReferencedSeriesSequence
    assert [s.SeriesInstanceUID for s in series] == [first.SeriesInstanceUID]
    assert {r.ReferencedSOPInstanceUID for r in series[0].ReferencedSOPSequence} == sop_uids
    assert "PixelData" not in sr


def test_sr_says_not_for_diagnostic_use():
    sr = build_sr([header_only(ct_series(1)[0])], decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    assert NOT_FOR_DIAGNOSTIC_USE in sr.SeriesDescription
    assert any(NOT_FOR_DIAGNOSTIC_USE in text for text in comments(sr))
    assert sr.PreliminaryFlag == "PRELIMINARY" and sr.VerificationFlag == "UNVERIFIED"


def test_sr_for_a_radiograph_reports_a_radiograph_procedure():
    sr = build_sr([header_only(dx_image())], nodule_decision(True), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    assert coded_value(only(sr, "121058", "DCM")) == ("43468-8", "LN")  # Procedure reported
    assert coded_value(only(sr, "FLAGREASON", "99TRIAGE")) == ("786838002", "SCT")


def test_sr_rebuilt_with_the_same_inputs_is_byte_identical():
    source = [header_only(ds) for ds in ct_series()]
    first = encoded(build_sr(source, decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID))
    second = encoded(build_sr(source, decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID))
    assert first == second


def test_sr_times_are_the_decision_time():
    aware = WHEN.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30)))
    sr = build_sr([header_only(ct_series(1)[0])], decision(decided_at=aware), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    for date, time in (("ContentDate", "ContentTime"), ("InstanceCreationDate", "InstanceCreationTime"), ("SeriesDate", "SeriesTime")):
        assert (str(sr[date].value), str(sr[time].value)) == ("20250314", "102005"), date
    assert sr.TimezoneOffsetFromUTC == "-0530"
    stamped = [str(i.ContributionDateTime) for i in sr.ContributingEquipmentSequence if "ContributionDateTime" in i]
    assert stamped == ["20250314102005"]


def test_sr_tolerates_missing_type2_attributes_without_touching_the_source():
    source = [header_only(ds) for ds in ct_series(2)]
    for keyword in ("PatientBirthDate", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        delattr(source[0], keyword)
    source[0].PatientSex = "U"
    before = copy.deepcopy(source[0])
    sr = build_sr(source, decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    for keyword in ("PatientBirthDate", "AccessionNumber", "StudyID", "ReferringPhysicianName", "PatientSex"):
        assert keyword in sr and not sr[keyword].value, keyword
    assert source[0] == before


def test_sr_refuses_no_source_and_mixed_series():
    with pytest.raises(ValueError):
        build_sr([], decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    mixed = [header_only(ct_series(1)[0]), header_only(ct_series(1)[0])]
    with pytest.raises(DicomError):
        build_sr(mixed, decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID)


# --- rendering -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape, expected", [((64, 64), (512, 512)), ((512, 512), (512, 512)),
                                             ((700, 900), (700, 900)), ((3000, 2500), (1024, 853)), ((96, 64), (512, 341))])
def test_display_shape_keeps_aspect_within_the_readable_range(shape, expected):
    assert render.display_shape(shape) == expected


def test_resample_keeps_constants_and_averages_when_shrinking():
    assert np.allclose(resample(np.full((7, 5), 0.25), (31, 3)), 0.25)
    stripes = np.tile([0.0, 1.0], (8, 8))  # 8 x 16, alternating columns
    assert np.allclose(resample(stripes, (8, 4))[:, 1:-1], 0.5)  # no aliasing away from the borders
    assert np.allclose(resample(np.array([[0.0, 1.0]]), (1, 4)), [[0.0, 0.25, 0.75, 1.0]])  # linear between centres
    big = np.random.default_rng(0).random((300, 250))
    assert np.allclose(resample(big, (100, 50)).mean(), big.mean(), atol=1e-3)


def test_heatmap_over_a_non_square_image_crops_the_padding():
    heat = np.zeros((8, 8))
    heat[:, :1] = 1.0  # within the left padding (24 of 96 columns) of a 96 x 48 image
    heat[:, 3:5] = 0.5  # padded-square columns 36..59, image columns 12..35
    on_image = render.heatmap_over(heat, (96, 48))
    assert on_image.shape == (96, 48)
    assert on_image.max() <= 0.5 + 1e-9
    assert on_image[:, 20:28].min() > 0.49
    assert on_image[:, 44:].max() < 1e-9


def test_heatmap_with_the_image_aspect_is_stretched_and_others_refused():
    heat = np.zeros((4, 2))
    heat[0, 0] = 1.0
    out = render.heatmap_over(heat, (96, 48))
    assert out[0, 0] > 0.9 and out[-1, -1] == 0
    with pytest.raises(ValueError):
        render.heatmap_over(np.zeros((4, 3)), (96, 48))


def test_grey_windows_and_inverts_monochrome1():
    values = np.array([[0.0, 40.0, 80.0]])
    assert np.allclose(render.grey(values, 40, 80, "MONOCHROME2"), [[0.0, 0.5, 1.0]])
    assert np.allclose(render.grey(values, 40, 80, "MONOCHROME1"), [[1.0, 0.5, 0.0]])


def test_overlay_leaves_cool_pixels_grey_and_tints_hot_ones():
    grey = np.full((1, 3), 0.5)
    rgb = render.overlay(grey, np.array([[0.49, 0.5, 1.0]]), 0.5)
    assert tuple(rgb[0, 0]) == (128, 128, 128)
    r, g, b = (int(v) for v in rgb[0, 1])
    assert r > 128 > g >= b  # red at the floor
    r, g, b = (int(v) for v in rgb[0, 2])
    assert r > 200 and g > 200 and b < 64  # yellow at the top


def test_burn_in_writes_the_banner_above_the_image_and_the_line_below_it_covering_nothing():
    plain = np.full((512, 512, 3), 90, np.uint8)  # an image grey everywhere, to the edges
    lines = ["model 1.0 score 0.90"]
    out = render.burn_in(plain, NOT_FOR_DIAGNOSTIC_USE, lines)
    top, bottom = render.bands(512, NOT_FOR_DIAGNOSTIC_USE, lines)
    assert out.shape == (top + 512 + bottom, 512, 3) and top > 20 and bottom > 10
    assert (out[top:top + 512] == plain).all()  # not one pixel of the image written over
    banner = out[:top]
    assert ((banner[..., 0] > 200) & (banner[..., 1] > 200) & (banner[..., 2] < 80)).sum() > 500  # yellow
    assert (out[top + 512:] > 200).all(axis=-1).sum() > 50  # white text below
    assert (plain == 90).all()


def test_a_burned_in_line_too_long_for_the_slice_wraps_at_the_lines_size_instead_of_shrinking():
    """Issue 26 screenshots: on a 512-wide head CT the verdict "FLAGGED for priority review:
    suspected intracranial haemorrhage (intraparenchymal or subdural)" was shrunk to about
    half the size of the score line under it, the smallest text on the capture."""
    from PIL import ImageFont

    verdict = "FLAGGED for priority review: suspected intracranial haemorrhage (intraparenchymal or subdural)"
    lines = [verdict, "Triage score 0.882 >= threshold 0.159 (a score, not a probability)", "head-ct-ich-demo 1.2.1"]
    margin, _, placed = render._layout(512, NOT_FOR_DIAGNOSTIC_USE, lines)
    base = ImageFont.load_default(size=512 // 32)
    assert {font.size for font, _ in placed} == {base.size}  # every line at one size, none shrunk
    assert " ".join(text for _, text in placed[:-2]) == verdict and len(placed) >= 4  # wrapped, not cut
    assert all(base.getlength(text) <= 512 - 2 * margin for _, text in placed)
    out = render.burn_in(np.zeros((512, 512, 3), np.uint8), NOT_FOR_DIAGNOSTIC_USE, lines)
    top, bottom = render.bands(512, NOT_FOR_DIAGNOSTIC_USE, lines)
    assert out.shape == (top + 512 + bottom, 512, 3)


# --- secondary capture ---------------------------------------------------------------------

def _hot_spot(size: int = 16) -> np.ndarray:
    heat = np.zeros((size, size))
    heat[size // 4:size // 2, size // 4:size // 2] = 1.0
    return heat


def test_capture_is_an_rgb_secondary_capture_in_the_source_study():
    series = ct_series()
    key = series[2]
    uids = ResultUids.from_key("k")
    sc = build_heatmap_capture(header_only(key), pixels(key), (40, 80), _hot_spot(), decision(), uids)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (sc.SamplesPerPixel, sc.PhotometricInterpretation, sc.BitsAllocated) == (3, "RGB", 8)
    top, bottom = render.bands(512, NOT_FOR_DIAGNOSTIC_USE, summary_lines(decision()))
    assert (sc.Rows, sc.Columns) == (top + 512 + bottom, 512)  # the text in bands above and below the slice
    assert sc.BurnedInAnnotation == "YES"
    assert NOT_FOR_DIAGNOSTIC_USE in sc.SeriesDescription and NOT_FOR_DIAGNOSTIC_USE in sc.ImageComments
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "AccessionNumber", "StudyDescription", "PatientAge"):
        assert sc[keyword].value == key[keyword].value, keyword
    assert (sc.SeriesInstanceUID, sc.SOPInstanceUID) == (uids.sc_series_uid, uids.sc_instance_uid)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == key.SOPInstanceUID
    assert [float(v) for v in sc.PixelSpacing] == [0.0625, 0.0625]
    assert list(sc.PatientOrientation) == ["L", "P"]
    assert sc.Manufacturer == "Triage Appliance"


def test_capture_shows_the_heat_where_it_is_and_grey_elsewhere():
    key = ct_series(1)[0]
    sc = build_heatmap_capture(header_only(key), pixels(key), (40, 80), _hot_spot(), decision(), ResultUids.from_key("k"))
    top, _ = render.bands(512, NOT_FOR_DIAGNOSTIC_USE, summary_lines(decision()))
    image = sc.pixel_array.astype(int)[top:top + 512]  # the slice, without the text bands
    spot = image[150:230, 150:230]  # inside rows/columns 128..255
    assert (spot[..., 0] - spot[..., 2] > 100).all() and (spot[..., 1] - spot[..., 2] > 100).all()  # yellow
    cold = image[300:400, 300:400]
    assert (cold[..., 0] == cold[..., 1]).all() and (cold[..., 1] == cold[..., 2]).all()


def test_capture_of_a_non_square_monochrome1_radiograph():
    dx = dx_image(rows=96, columns=64)
    heat = np.zeros((32, 32))
    heat[:, 20:24] = 1.0  # padded-square columns 320..383 of 512, minus 85 of padding
    sc = build_heatmap_capture(header_only(dx), pixels(dx), (2048, 4096), heat, nodule_decision(True), ResultUids.from_key("k"))
    top, bottom = render.bands(341, NOT_FOR_DIAGNOSTIC_USE, summary_lines(nodule_decision(True)))
    assert (sc.Rows, sc.Columns) == (top + 512 + bottom, 341)
    assert list(sc.PatientOrientation) == ["L", "F"]
    assert "PixelSpacing" not in sc
    image = sc.pixel_array.astype(int)
    middle = image[200:300]
    tinted = (middle[..., 0] - middle[..., 2]) > 60
    columns = np.flatnonzero(tinted.all(axis=0))
    assert 225 < columns.min() and columns.max() < 305  # stretched, it would be at 213..255
    grey = middle[:, :100]
    assert (grey[..., 0] == grey[..., 2]).all() and (grey[..., 0] == 193).all()  # 1 - 1000/4096: MONOCHROME1, light


def test_capture_rebuilt_with_the_same_inputs_is_byte_identical():
    key = ct_series(1)[0]
    build = lambda: encoded(build_heatmap_capture(header_only(key), pixels(key), (40, 80), _hot_spot(), decision(), ResultUids.from_key("k")))
    assert build() == build()


def test_capture_of_an_oblique_slice_writes_oblique_orientation():
    key = ct_series(1)[0]
    key.ImageOrientationPatient = [0.98, 0.0, -0.2, 0.0, 1.0, 0.0]
    sc = build_heatmap_capture(header_only(key), pixels(key), (40, 80), _hot_spot(), decision(), ResultUids.from_key("k"))
    assert list(sc.PatientOrientation) == ["LF", "P"]


@pytest.mark.parametrize("bad", ["pixels", "heat_range", "heat_nan", "heat_3d", "window"])
def test_capture_refuses_bad_inputs(bad):
    key = ct_series(1)[0]
    values, heat, window = pixels(key), _hot_spot(), (40, 80)
    if bad == "pixels":
        values = values[:-1]
    elif bad == "heat_range":
        heat = heat * 1.5
    elif bad == "heat_nan":
        heat[0, 0] = np.nan
    elif bad == "heat_3d":
        heat = heat[None]
    else:
        window = (40, 0)
    with pytest.raises(ValueError):
        build_heatmap_capture(header_only(key), values, window, heat, decision(), ResultUids.from_key("k"))


def test_an_unknown_character_set_is_only_a_label_and_the_objects_are_built():
    """Issue 13, item 8. Before: highdicom refused 'ISO_IR 999' with a ValueError and the
    series failed as "internal error: ValueError"."""
    series = [header_only(ds) for ds in ct_series(2)]
    for ds in series:
        ds.SpecificCharacterSet = "ISO_IR 999"
    key = ct_series(2)[1]
    key.SpecificCharacterSet = "ISO_IR 999"
    sr = build_sr(series, decision(), ResultUids.from_key("k"), device_uid=DEVICE_UID)
    sc = build_heatmap_capture(header_only(key), pixels(key), (40, 80), _hot_spot(), decision(), ResultUids.from_key("k"))
    assert sr.SpecificCharacterSet == sc.SpecificCharacterSet == "ISO_IR 192"
    assert str(sr.PatientName) == str(series[0].PatientName)
    assert series[0].SpecificCharacterSet == "ISO_IR 999"  # the source is not changed


def test_heat_floor_is_the_operating_point_and_a_flagged_series_always_shows_where():
    weak = np.full((4, 4), 0.1)
    weak[1, 1] = 0.3
    assert render.heat_floor(0.35, weak, flagged=False) == 0.35  # nothing drawn on this unflagged slice
    floor = render.heat_floor(0.35, weak, flagged=True)  # resampling shaved the peak below the threshold
    assert floor == pytest.approx(0.3)
    rgb = render.overlay(np.full((4, 4), 0.5), weak, floor)
    assert (rgb[1, 1, 0] > rgb[1, 1, 2]) and (rgb[0, 0] == rgb[0, 0, 0]).all()


def test_capture_of_a_flagged_series_with_a_low_threshold_is_tinted():
    key = ct_series(1)[0]
    heat = np.full((16, 16), 0.2)
    heat[4:8, 4:8] = 0.3  # below the old fixed floor of 0.5, above this model's threshold
    d = decision(True, score=0.31, threshold=0.25)
    sc = build_heatmap_capture(header_only(key), pixels(key), (40, 80), heat, d, ResultUids.from_key("k"))
    top, _ = render.bands(512, NOT_FOR_DIAGNOSTIC_USE, summary_lines(d))
    image = sc.pixel_array.astype(int)[top:top + 512]
    spot = image[150:230, 150:230]
    assert (spot[..., 0] - spot[..., 2] > 60).all()
    assert "FLAGGED for priority review" in sc.ImageComments and "not a probability" in sc.ImageComments


def test_sr_names_the_whole_variant_that_ran_among_its_contributing_equipment():
    """A PACS user reads the processing step in Contributing Equipment: the model, its
    version and the variant, never cut mid-word (ST holds 1024 characters)."""
    what = decision(model_id="chest-cr-pneumothorax-demo", variant="onnxruntime/CPU/fp32")
    sr = build_sr([header_only(ct_series(1)[0])], what, ResultUids.from_key("k"), device_uid=DEVICE_UID)
    [algorithm] = [i for i in sr.ContributingEquipmentSequence if "DeviceUID" in i]
    assert algorithm.ContributionDescription == (
        "Processing Algorithm: chest-cr-pneumothorax-demo 1.2.0 on onnxruntime/CPU/fp32")

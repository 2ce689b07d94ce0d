"""The heat map over the key slice as an RGB Secondary Capture."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from appliance import formats
from appliance.report import render
from appliance.report.content import ResultContent
from appliance.report.headers import NOT_FOR_DIAGNOSTIC_USE, content_datetime, equipment, source_header, stamp
from appliance.report.uids import ResultUids

SC_SERIES_NUMBER = 991
SC_SERIES_DESCRIPTION = f"AI TRIAGE HEAT MAP - {NOT_FOR_DIAGNOSTIC_USE}"
_OBLIQUE = 0.01  # direction cosines below this are rounding noise, not obliquity


def build_heatmap_capture(
    key_slice: Dataset,
    key_pixels: np.ndarray,
    window: tuple[float, float],
    heatmap: np.ndarray,
    content: ResultContent,
    uids: ResultUids,
) -> hd.sc.SCImage:
    """Build the Secondary Capture of the key slice with the heat map overlaid.

    The slice is windowed to grey, brought to a readable size (long side 512 to 1024
    pixels, aspect kept), tinted red to yellow where the heat map is at least
    the operating point (:func:`render.heat_floor`), and "NOT FOR DIAGNOSTIC USE" plus
    the verdict, the score against the threshold and the model are burned in (Burned In
    Annotation YES).

    Parameters
    ----------
    key_slice : pydicom.Dataset
        Header of the key slice (pixel data not needed).
    key_pixels : numpy.ndarray
        Its pixels after the modality rescale (e.g. HU), shape ``(Rows, Columns)``.
    window : tuple of float
        ``(center, width)`` in the units of ``key_pixels``.
    heatmap : numpy.ndarray
        2-D activation map in [0, 1], any size: either of the slice's aspect ratio or
        square over the slice padded to a square (see :func:`render.heatmap_over`).
    content : ResultContent
        What the burned-in line and the header say.
    uids : ResultUids
        ``sc_series_uid`` and ``sc_instance_uid`` are used.

    Returns
    -------
    highdicom.sc.SCImage
        RGB, 8 bits, in the source study, referencing the key slice as its source.

    Raises
    ------
    ValueError
        If the pixels do not match the header, the window width is not positive, or
        the heat map is not a finite 2-D array in [0, 1].
    """
    shape = (int(key_slice.Rows), int(key_slice.Columns))
    if key_pixels.shape != shape:
        raise ValueError(f"key_pixels has shape {key_pixels.shape}, the key slice is {shape}")
    if heatmap.ndim != 2 or not np.all(np.isfinite(heatmap)) or heatmap.min() < 0 or heatmap.max() > 1:
        raise ValueError("heatmap must be a finite 2-D array with values in [0, 1]")
    head = source_header(key_slice)
    out_shape = render.display_shape(shape)
    grey = render.resample(
        render.grey(key_pixels, *window, head.get("PhotometricInterpretation", "MONOCHROME2")), out_shape
    )
    heat = render.heatmap_over(heatmap, out_shape)
    floor = render.heat_floor(content.threshold, heat, content.flag)
    rgb = render.burn_in(
        render.overlay(np.clip(grey, 0.0, 1.0), heat, floor),
        NOT_FOR_DIAGNOSTIC_USE,
        summary_lines(content),
    )
    sc = hd.sc.SCImage.from_ref_dataset(
        head,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.sc_series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sc_instance_uid,
        instance_number=1,
        pixel_spacing=_pixel_spacing(head, shape, out_shape),  # type: ignore[arg-type]  # highdicom says int; mm
        # highdicom takes single letters only; the real (maybe oblique or empty) value is set below.
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SC_SERIES_DESCRIPTION,
        **equipment(content),
        **content_datetime(content),
    )
    sc.copy_patient_and_study_information(head)
    sc.PatientOrientation = _patient_orientation(head)
    body_part: str | None = head.get("BodyPartExamined")
    laterality = _laterality(head)
    if body_part:
        sc.BodyPartExamined = body_part
    if laterality or not body_part:
        sc.Laterality = laterality  # empty if unknown: Type 2C, needed when the body part is unknown
    sc.ConversionType = "SYN"
    sc.BurnedInAnnotation = "YES"
    sc.RecognizableVisualFeatures = "NO"
    sc.LossyImageCompression = "01" if head.get("LossyImageCompression") == "01" else "00"
    sc.ImageComments = f"{NOT_FOR_DIAGNOSTIC_USE}. AI triage heat map. {' '.join(summary_lines(content))}"
    sc.DerivationDescription = (
        f"Key slice windowed (center {window[0]:g}, width {window[1]:g}), resampled to {out_shape[0]}x{out_shape[1]}; "
        f"model activation map overlaid where >= {formats.score(floor)} (the operating point); text burned in"
    )
    sc.SourceImageSequence = [_source_reference(head)]
    local = content.decided_at.replace(tzinfo=None)
    sc.DateOfSecondaryCapture, sc.TimeOfSecondaryCapture = DA(local.date()), TM(local.time())
    stamp(sc, content)
    return sc


def summary_lines(content: ResultContent) -> list[str]:
    """The burned-in lines: the verdict in the SR's words, then the score against the
    threshold (a score, not a probability) and the model."""
    finding = formats.finding(content.finding.lower())
    if content.flag:
        verdict = f"FLAGGED for priority review: suspected {finding}"
        comparison = ">="
    else:
        verdict = f"Not flagged; does not exclude {finding}"
        comparison = "<"
    return [
        verdict,
        f"Triage score {formats.score(content.score)} {comparison} threshold {formats.score(content.threshold)} "
        "(a score, not a probability)",
        f"{content.model_id} {content.model_version}",
    ]


def _pixel_spacing(head: Dataset, shape: tuple[int, int], out_shape: tuple[int, int]) -> tuple[float, float] | None:
    spacing = head.get("PixelSpacing")
    if not spacing or len(spacing) != 2:
        return None
    (row, column), (rows, columns), (out_rows, out_columns) = spacing, shape, out_shape
    return float(row) * rows / out_rows, float(column) * columns / out_columns


def _patient_orientation(head: Dataset) -> list[str]:
    """Patient Orientation of the slice: its own, else from Image Orientation (Patient);
    empty when neither is known."""
    own = head.get("PatientOrientation")
    if own and len(own) == 2 and all(own):
        return list(own)
    cosines = head.get("ImageOrientationPatient")
    if not cosines or len(cosines) != 6:
        return []
    return [_direction(list(map(float, cosines[:3]))), _direction(list(map(float, cosines[3:])))]


def _direction(vector: list[float]) -> str:
    # Letters of the patient axes a row/column runs towards, strongest first (PS3.3 C.7.6.1.1.1).
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    order = sorted(range(3), key=lambda i: -abs(vector[i]))
    return "".join(letters[i][0 if vector[i] > 0 else 1] for i in order if abs(vector[i]) >= _OBLIQUE)


def _laterality(head: Dataset) -> str:
    """The series' Laterality (R or L) from the source, empty when none or unpaired."""
    for keyword in ("Laterality", "ImageLaterality"):
        if head.get(keyword) in ("R", "L"):
            return str(head.get(keyword))
    return ""


def _source_reference(head: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = head.SOPClassUID
    item.ReferencedSOPInstanceUID = head.SOPInstanceUID
    purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item

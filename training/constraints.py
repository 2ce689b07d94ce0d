"""The input constraints a package declares: the ranges its training data covered.

Pure: a generator configuration in, the manifest's ``input_constraints`` out. The
appliance refuses (``not-eligible``, with a "not analysed" notice) any series outside
them, so a model is never asked about images unlike the ones it learnt from.
"""

from __future__ import annotations

import math

from training.data.cr_synth import ROW_FACTORS, CRConfig
from training.data.ct_synth import CTConfig
from training.data.dicom_common import PATIENT_AGE_YEARS

#: Image types never scored: scout views, and derived or secondary images (reformats,
#: screen captures, other tools' results).
EXCLUDED_IMAGE_TYPES = [["LOCALIZER"], ["DERIVED", "SECONDARY"]]


def _span(low: float, high: float) -> dict[str, float]:
    return {"min": round(low, 6), "max": round(high, 6)}


def input_constraints(generator: CTConfig | CRConfig) -> dict:
    """``input_constraints`` for a model trained on ``generator``'s data (pure)."""
    if isinstance(generator, CTConfig):
        thinnest, thickest = min(generator.thicknesses_mm), max(generator.thicknesses_mm)
        low, high = generator.coverage_mm
        return {
            "slice_thickness_mm": _span(thinnest, thickest),
            "pixel_spacing_mm": _span(generator.fov_mm[0] / generator.matrix, generator.fov_mm[1] / generator.matrix),
            "rows": _span(generator.matrix, generator.matrix),
            "columns": _span(generator.matrix, generator.matrix),
            "slice_count": _span(max(3, math.floor(low / thickest)), math.ceil(high / thinnest)),
            "excluded_image_types": EXCLUDED_IMAGE_TYPES,
            "required_tags": ["ImagePositionPatient", "PixelSpacing", "SliceThickness"],
            "patient_age_years": _span(*PATIENT_AGE_YEARS),
            "contrast": "none",
        }
    fewest, most = generator.columns
    return {
        "pixel_spacing_mm": _span(generator.fov_mm[0] / most, generator.fov_mm[1] / fewest),
        "rows": _span(int(fewest * min(ROW_FACTORS)), int(most * max(ROW_FACTORS))),
        "columns": _span(fewest, most),
        "slice_count": _span(1, 1),
        "excluded_image_types": EXCLUDED_IMAGE_TYPES,
        "required_tags": ["ImagerPixelSpacing"],
        "patient_age_years": _span(*PATIENT_AGE_YEARS),
        "view_positions": ["PA"],
    }

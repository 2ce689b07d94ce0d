"""What the study page shows of the stored result objects: the secondary capture as a PNG
and the SR's content tree as text, both read from the files sent to PACS."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from appliance import formats

#: Numeric SR items written as a score (:func:`appliance.formats.score`), by concept code.
_SCORES = {("246262008", "SCT"), ("111071", "DCM")}  # Score, CAD Operating Point


def capture_png(path: Path) -> bytes:
    """The heat-map secondary capture (watermark burned in) as PNG bytes."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if pixels.ndim == 2:
        image = Image.fromarray(pixels.astype(np.uint8), mode="L")
    else:
        image = Image.fromarray(pixels.astype(np.uint8), mode="RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def sr_lines(path: Path) -> list[tuple[int, str, str]]:
    """The SR content tree as ``(depth, concept name, value)`` lines, in document order."""
    ds = pydicom.dcmread(path)
    lines: list[tuple[int, str, str]] = []

    def walk(items, depth: int) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            lines.append((depth, str(name), _value(item)))
            if "ContentSequence" in item:
                walk(item.ContentSequence, depth + 1)

    title = ds.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in ds else "Report"
    lines.append((0, str(title), ""))
    walk(ds.get("ContentSequence", []), 1)
    return lines


def _value(item) -> str:
    kind = item.get("ValueType", "")
    if kind == "TEXT":
        return str(item.TextValue)
    if kind == "CODE":
        return str(item.ConceptCodeSequence[0].CodeMeaning)
    if kind == "NUM":
        return _number(item)
    if kind == "UIDREF":
        return str(item.UID)
    if kind in ("DATETIME", "DATE", "TIME"):
        return str(item.get(kind.title().replace("time", "Time"), ""))
    if kind == "PNAME":
        return str(item.PersonName)
    if kind in ("IMAGE", "COMPOSITE"):
        ref = item.ReferencedSOPSequence[0]
        return f"image {ref.ReferencedSOPInstanceUID}"
    return ""


def _number(item) -> str:
    """A NUM item as a person reads it: a score with the scores' precision, anything else
    with 4 significant digits; its unit unless it is UCUM ``1`` (no units)."""
    measured = item.MeasuredValueSequence[0]
    value = float(measured.NumericValue)
    name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
    concept = (str(name.CodeValue), str(name.CodingSchemeDesignator)) if name is not None else None
    text = formats.score(value) if concept in _SCORES else formats.number(value)
    units = measured.get("MeasurementUnitsCodeSequence")
    unit = str(units[0].CodeValue) if units else ""
    return text if unit in ("", "1") else f"{text} {unit}"

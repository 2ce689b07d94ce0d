"""What the study page shows of the stored result objects: the secondary capture as a PNG
and the SR's content tree as text, both read from the files sent to PACS."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image


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
        measured = item.MeasuredValueSequence[0]
        unit = measured.MeasurementUnitsCodeSequence[0].CodeValue if "MeasurementUnitsCodeSequence" in measured else ""
        return f"{measured.NumericValue} {unit}".strip()
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

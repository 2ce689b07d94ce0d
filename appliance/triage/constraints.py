"""Input constraints of a model package, checked against a series before any inference.

Pure: headers in, the first violated constraint in words (or None) out. The worker calls
:func:`first_violation` after routing; a series outside the constraints ends
``not-eligible`` with that reason and gets the "not analysed" notice.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from appliance.models.package import InputConstraints, Range


def first_violation(constraints: InputConstraints | None, headers: Sequence[Dataset]) -> str | None:
    """The first constraint ``headers`` (one series' instances) break, in words; None if
    they meet them all or the package has none.

    Checks, in order: instance count, required tags, excluded image types, rows,
    columns, slice thickness, pixel spacing (Pixel Spacing, else Imager Pixel Spacing).
    A value that is needed but missing is a violation too.
    """
    if constraints is None:
        return None
    c = constraints
    if c.slice_count is not None and not c.slice_count.holds(len(headers)):
        return f"{len(headers)} images outside {c.slice_count} images"
    for ds in headers:
        problem = _instance_violation(c, ds)
        if problem is not None:
            return problem
    return None


def _instance_violation(c: InputConstraints, ds: Dataset) -> str | None:
    for keyword in c.required_tags:
        if ds.get(keyword) in (None, "", []):
            return f"required attribute {keyword} missing"
    image_type = {str(v).upper() for v in (ds.get("ImageType") or [])}
    for excluded in c.excluded_image_types:
        if excluded and {v.upper() for v in excluded} <= image_type:
            return "image type " + "\\".join(excluded) + " excluded"
    checks = (
        ("rows", c.rows, _number(ds, "Rows"), ""),
        ("columns", c.columns, _number(ds, "Columns"), ""),
        ("slice thickness", c.slice_thickness_mm, _number(ds, "SliceThickness"), " mm"),
        ("pixel spacing", c.pixel_spacing_mm, _spacing(ds), " mm"),
    )
    for name, allowed, value, unit in checks:
        problem = _outside(name, allowed, value, unit)
        if problem is not None:
            return problem
    return None


def _outside(name: str, allowed: Range | None, value: float | None, unit: str) -> str | None:
    if allowed is None:
        return None
    if value is None:
        return f"{name} missing (must be {allowed}{unit})"
    if not allowed.holds(value):
        return f"{name} {value:g}{unit} outside {allowed}{unit}"
    return None


def _number(ds: Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _spacing(ds: Dataset) -> float | None:
    """The finer of the row and column spacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value and len(value) == 2:
                return min(float(v) for v in value)
        except (TypeError, ValueError):
            return None
    return None

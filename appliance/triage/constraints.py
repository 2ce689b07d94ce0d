"""Input constraints of a model package, checked against a series before any inference.

Pure: headers in, the first violated constraint in words (or None) out. The worker calls
:func:`first_violation` after routing; a series outside the constraints ends
``not-eligible`` with that reason and gets the "not analysed" notice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence

from pydicom.dataset import Dataset

from appliance.models.manifest import InputConstraints, Range


def first_violation(
    constraints: InputConstraints | None, headers: Sequence[Dataset], known: Mapping[int, str | None] | None = None
) -> str | None:
    """The first constraint ``headers`` (one series' instances) break, in words; None if
    they meet them all or the package has none. ``known`` holds what
    :func:`instance_violation` said already of some of them (by index into ``headers``),
    as the worker checks instances while they arrive.

    Checks, in order: instance count, required tags, excluded image types, patient age,
    view position, contrast, rows, columns, slice thickness, pixel spacing (Pixel
    Spacing, else Imager Pixel Spacing). A value that is needed but missing is a
    violation too.
    """
    if constraints is None:
        return None
    c = constraints
    if c.slice_count is not None and not c.slice_count.holds(len(headers)):
        return f"{len(headers)} images outside {c.slice_count} images"
    known = known or {}
    for index, ds in enumerate(headers):
        problem = known[index] if index in known else instance_violation(c, ds)
        if problem is not None:
            return problem
    return None


def constraints_key(constraints: InputConstraints | None) -> str:
    """What :func:`instance_violation` depends on: the same key, the same answers."""
    return "" if constraints is None else constraints.model_dump_json()


def instance_violation(c: InputConstraints, ds: Dataset) -> str | None:
    """The first constraint one instance breaks (all but the instance count), or None."""
    for keyword in c.required_tags:
        if ds.get(keyword) in (None, "", []):
            return f"required attribute {keyword} missing"
    image_type = {str(v).upper() for v in (ds.get("ImageType") or [])}
    for excluded in c.excluded_image_types:
        if excluded and {v.upper() for v in excluded} <= image_type:
            return "image type " + "\\".join(excluded) + " excluded"
    for check in (_age_violation, _view_violation, _contrast_violation):
        problem = check(c, ds)
        if problem is not None:
            return problem
    checks = (
        ("rows", c.rows, header_number(ds, "Rows"), ""),
        ("columns", c.columns, header_number(ds, "Columns"), ""),
        ("slice thickness", c.slice_thickness_mm, header_number(ds, "SliceThickness"), " mm"),
        ("pixel spacing", c.pixel_spacing_mm, finer_spacing(ds), " mm"),
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
        exactly = allowed.min is not None and allowed.min == allowed.max  # "rows 256, not 512", not "outside 512-512"
        shown, bounds = _apart(value, allowed)
        return f"{name} {shown}{unit}{', not' if exactly else ' outside'} {bounds}{unit}"
    return None


def _apart(value: float, allowed: Range) -> tuple[str, str]:
    """The value and the range to 4 significant digits, or as many more as it takes for
    the value not to read as the bound it breaks (0.48830 outside 0.3906-0.4883 would)."""
    for digits in range(4, 17):
        shown = f"{value:.{digits}g}"
        bounds = [f"{b:.{digits}g}" for b in (allowed.min, allowed.max) if b is not None]
        if shown not in bounds:
            return shown, allowed.text(digits)
    return repr(value), allowed.text(17)


def header_number(ds: Dataset, keyword: str) -> float | None:
    """The header value ``keyword`` as a number, or None when it is absent, empty or not one."""
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def finer_spacing(ds: Dataset) -> float | None:
    """The finer of the row and column spacing (Pixel Spacing, else Imager Pixel Spacing)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value and len(value) == 2:
                return min(float(v) for v in value)
        except (TypeError, ValueError):
            return None
    return None


# Patient age, view position, contrast ------------------------------------------------
_AGE = re.compile(r"(\d{3})([DWMY])")
_YEARS_PER = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_UNIT_WORD = {"D": "day", "W": "week", "M": "month", "Y": "year"}
#: Ages from 90 years are said as "90 years or older": an exact age over 89 is an
#: identifier under HIPAA Safe Harbor, and the reason leaves the box in the notice.
_OLDEST_SAID = 90
#: Contrast/Bolus Agent values some scanners write to say that no agent was given.
_NO_AGENT = frozenset({"NONE", "NO", "NO CONTRAST"})


def patient_age(ds: Dataset) -> tuple[float, str] | None:
    """The patient's age in years and in words, or None if unknown.

    From Patient Age (``nnnD``, ``nnnW``, ``nnnM`` or ``nnnY``, PS3.5 AS); if that is
    absent or malformed, from Patient Birth Date against Study Date (completed years;
    days under a year).
    """
    match = _AGE.fullmatch(str(ds.get("PatientAge") or "").strip())
    if match is not None:
        count, unit = int(match[1]), match[2]
        return count * _YEARS_PER[unit], _say(count, _UNIT_WORD[unit])
    born, seen = _date(ds, "PatientBirthDate"), _date(ds, "StudyDate")
    if born is None or seen is None or seen < born:
        return None
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    if years == 0:
        days = (seen - born).days
        return days / 365.25, _say(days, "day")
    return float(years), _say(years, "year")


def _say(count: int, unit: str) -> str:
    if unit == "year" and count >= _OLDEST_SAID:
        return f"{_OLDEST_SAID} years or older"
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(str(ds.get(keyword) or "").strip(), "%Y%m%d").date()
    except ValueError:
        return None


def _age_violation(c: InputConstraints, ds: Dataset) -> str | None:
    if c.patient_age_years is None:
        return None
    age = patient_age(ds)
    if age is None:
        if str(ds.get("PatientAge") or "").strip():  # the value itself is not repeated: it may be an exact old age
            return "patient age unknown (PatientAge malformed: not like 045Y, 006M, 002W or 010D)"
        return "patient age unknown"
    years, words = age
    if not c.patient_age_years.holds(years):
        return f"patient age {words} outside {c.patient_age_years} years"
    return None


def _view_violation(c: InputConstraints, ds: Dataset) -> str | None:
    if c.view_positions is None:
        return None
    allowed = [v.strip().upper() for v in c.view_positions]
    view = str(ds.get("ViewPosition") or "").strip().upper()
    if not view:
        return f"view position missing (must be {', '.join(allowed)})"
    if view not in allowed:
        return f"view position {view} not in {', '.join(allowed)}"
    return None


def _contrast_violation(c: InputConstraints, ds: Dataset) -> str | None:
    if c.contrast != "none":
        return None
    for keyword in ("ContrastBolusAgent", "ContrastBolusRoute"):
        value = str(ds.get(keyword) or "").strip()
        if value and value.upper() not in _NO_AGENT:
            return f"contrast agent given ({keyword} {value[:64]!r}); the model is for non-contrast studies"
    return None

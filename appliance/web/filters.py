"""Jinja2 filters that turn stored numbers into words people read (pure)."""

from __future__ import annotations

import datetime as dt
import json

import jinja2

from appliance import formats


def when(seconds: float | None) -> str:
    """A stored wall-clock time as local ``YYYY-MM-DD HH:MM:SS`` with the zone's name, so
    a reader never has to guess whether it is the box's local time or UTC."""
    if seconds is None:
        return "—"
    return dt.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def utc_when(seconds: float | None) -> str:
    """A stored wall-clock time as ``YYYY-MM-DD HH:MM:SS`` in UTC, for a page that says
    its times are UTC (as the audit log's are)."""
    if seconds is None:
        return "—"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def short_when(seconds: float | None, now: float) -> str:
    """``HH:MM`` for today, ``YYYY-MM-DD HH:MM`` for other days (local time)."""
    if seconds is None:
        return "—"
    moment, today = dt.datetime.fromtimestamp(seconds), dt.datetime.fromtimestamp(now)
    return moment.strftime("%H:%M" if moment.date() == today.date() else "%Y-%m-%d %H:%M")


def age(seconds: float | None, now: float) -> str:
    """How old a figure computed at ``seconds`` is: ``as of 12 s ago``; ``not computed yet``."""
    return "not computed yet" if seconds is None else f"as of {formats.duration(now - seconds)} ago"


def person_name(value: str | None) -> str:
    """A DICOM person name as PACS viewers show it: ``NEWCOMER^BLEED`` -> ``NEWCOMER, BLEED``
    (family, then prefix, given and middle names, then suffix; the alphabetic group only)."""
    if not value or "^" not in value:  # one component: shown as stored
        return value or ""
    family, given, middle, prefix, suffix = ([*value.split("=", 1)[0].split("^"), "", "", "", ""])[:5]
    first = " ".join(p for p in (prefix, given, middle) if p.strip())
    return ", ".join(p for p in (family.strip(), first, suffix.strip()) if p) or value


def series_title(modality: str | None, description: str | None) -> str:
    """A series heading's modality and description: ``CT HEAD W/O CONTRAST``; the modality
    is not said twice when the description already starts with it (``MR BRAIN T2``, not
    ``MR MR BRAIN T2``)."""
    modality = (modality or "").strip()
    description = (description or "").strip()
    if not description:
        return f"{modality} (no series description)".strip()
    if not modality or description.upper().split(" ", 1)[0] == modality.upper():
        return description
    return f"{modality} {description}"


def fields(payload: str) -> list[tuple[str, str]]:
    """An audit row's JSON payload as ``(name, value)`` pairs a person reads: text as it
    is, nothing as a dash, yes/no, numbers with their quantity's precision
    (:func:`appliance.formats.by_key`), a nested record as ``name value`` pairs and a list
    of records one per line. The export keeps the exact values."""
    try:
        data = json.loads(payload)
    except ValueError:
        return [("text", payload)]
    if not isinstance(data, dict):
        return [("value", words("value", data))]
    return [(label(name), words(name, value)) for name, value in data.items()]


def label(name: str) -> str:
    """A stored key as a label: ``queue_wait_s`` -> ``queue wait`` (the value says ``s``)."""
    return (name[:-2] if name.endswith("_s") else name).replace("_", " ")


def words(name: str, value: object) -> str:
    """One stored value under ``name`` in words (see :func:`fields`)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return formats.by_key(name, value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{label(k)} {words(k, v)}" for k, v in value.items())
    if isinstance(value, list):
        return (
            "\n".join(words(name, v) for v in value)
            if any(isinstance(v, dict) for v in value)
            else (", ".join(words(name, v) for v in value))
        )
    return json.dumps(value)


def install(env: jinja2.Environment) -> None:
    env.filters.update(
        when=when,
        utc_when=utc_when,
        short_when=short_when,
        duration=formats.duration,
        age=age,
        score=formats.score,
        score_diff=formats.score_diff,
        percent=formats.percent,
        rate=formats.rate,
        load=formats.load,
        statistic=formats.statistic,
        ms=formats.ms,
        gib=formats.gib,
        finding=formats.finding,
        person_name=person_name,
        count=formats.count,
        fields=fields,
        series_title=series_title,
    )

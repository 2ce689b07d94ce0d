"""Jinja2 filters that turn stored numbers into words people read (pure)."""

from __future__ import annotations

import datetime as dt
import json

import jinja2


def when(seconds: float | None) -> str:
    """A stored wall-clock time as local ``YYYY-MM-DD HH:MM:SS``."""
    if seconds is None:
        return "—"
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def short_when(seconds: float | None, now: float) -> str:
    """``HH:MM`` for today, ``YYYY-MM-DD HH:MM`` for other days (local time)."""
    if seconds is None:
        return "—"
    moment, today = dt.datetime.fromtimestamp(seconds), dt.datetime.fromtimestamp(now)
    return moment.strftime("%H:%M" if moment.date() == today.date() else "%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age(seconds: float | None, now: float) -> str:
    """How old a figure computed at ``seconds`` is: ``as of 12 s ago``; ``not computed yet``."""
    return "not computed yet" if seconds is None else f"as of {duration(now - seconds)} ago"


#: Decimals of a score or threshold, on every page: enough that a score just under its
#: threshold does not read the same as it.
SCORE_DECIMALS = 3


def score(value: float | None) -> str:
    return "—" if value is None else f"{value:.{SCORE_DECIMALS}f}"


def person_name(value: str | None) -> str:
    """A DICOM person name as PACS viewers show it: ``NEWCOMER^BLEED`` -> ``NEWCOMER, BLEED``
    (family, then prefix, given and middle names, then suffix; the alphabetic group only)."""
    if not value or "^" not in value:  # one component: shown as stored
        return value or ""
    family, given, middle, prefix, suffix = ([*value.split("=", 1)[0].split("^"), "", "", "", ""])[:5]
    first = " ".join(p for p in (prefix, given, middle) if p.strip())
    return ", ".join(p for p in (family.strip(), first, suffix.strip()) if p) or value


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 site``, ``2 sites``: a number with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def fields(payload: str) -> list[tuple[str, str]]:
    """An audit row's JSON payload as ``(name, value)`` pairs a person reads: text as it
    is, nothing as a dash, yes/no, nested values as compact JSON."""
    try:
        data = json.loads(payload)
    except ValueError:
        return [("text", payload)]
    if not isinstance(data, dict):
        return [("value", json.dumps(data))]

    def words(value: object) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, str | int | float):
            return str(value)
        return json.dumps(value, separators=(", ", ": "), sort_keys=True)

    return [(name.replace("_", " "), words(value)) for name, value in data.items()]


def install(env: jinja2.Environment) -> None:
    env.filters.update(
        when=when,
        short_when=short_when,
        duration=duration,
        age=age,
        score=score,
        person_name=person_name,
        count=count,
        fields=fields,
    )

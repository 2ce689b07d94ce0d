"""How the appliance writes a number or a finding for a person to read: one precision per
quantity and one spelling, the same on the pages, in the SR's text and at the command
line (pure; the stored and sent values keep their full precision).

=======================  ==================  =====================================
quantity                 function            example
=======================  ==================  =====================================
score, threshold         :func:`score`       ``0.159`` (3 decimals)
score difference         :func:`score_diff`  ``+0.012``
share, rate, agreement   :func:`percent`     ``12.5 %`` (1 decimal)
events per hour or day   :func:`rate`        ``3.6`` (1 decimal)
load average             :func:`load`        ``17.40`` (2 decimals)
drift statistic          :func:`statistic`   ``0.2008`` (4 significant digits)
milliseconds per image   :func:`ms`          ``6.33 ms`` (2 decimals)
seconds                  :func:`seconds`     ``5.01 s`` (2 decimals), ``34 s``
volume                   :func:`volume_ml`   ``12.5 mL`` (1 decimal)
bytes                    :func:`gib`         ``22.6 GiB`` (1 decimal)
any other number         :func:`number`      ``0.1235``, ``1.5e-07`` (4 significant)
=======================  ==================  =====================================

:func:`finding` writes a finding as the appliance spells it: British English, as every
other word the appliance writes (``analysed``, ``prioritisation``), and as SNOMED CT's
en-GB preferred terms (``Intracranial haemorrhage``).
"""

from __future__ import annotations

import math
import re
from typing import TypeGuard

#: Decimals of a score or threshold: enough that a score just under its threshold does
#: not read the same as it (a threshold of 0.1586 and a score of 0.1581 read 0.159, 0.158).
SCORE_DECIMALS = 3
DASH = "—"


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def score(value: float | None) -> str:
    """A score or a threshold: ``0.159``."""
    return f"{value:.{SCORE_DECIMALS}f}" if _finite(value) else DASH


def score_diff(value: float | None) -> str:
    """A difference of two scores, signed: ``+0.012``, ``-0.300``."""
    return f"{value:+.{SCORE_DECIMALS}f}" if _finite(value) else DASH


def percent(fraction: float | None) -> str:
    """A share of 1 as per cent: ``0.125`` -> ``12.5 %``."""
    return f"{100 * fraction:.1f} %" if _finite(fraction) else DASH


def rate(value: float | None) -> str:
    """Events per hour or per day: ``3.6``."""
    return f"{value:.1f}" if _finite(value) else DASH


def load(value: float | None) -> str:
    """A load average: ``17.40``."""
    return f"{value:.2f}" if _finite(value) else DASH


def statistic(value: float | None) -> str:
    """A drift statistic or its threshold (a distance, a p-value): ``0.2008``, ``1.2e-05``."""
    return f"{value:.4g}" if _finite(value) else DASH


def ms(value: float | None) -> str:
    """Milliseconds (per image): ``6.33 ms``."""
    return f"{value:.2f} ms" if _finite(value) else DASH


def seconds(value: float | None) -> str:
    """A measured time: ``5.01 s`` under ten seconds, ``34 s`` from ten on."""
    if not _finite(value):
        return DASH
    return f"{value:.2f} s" if abs(value) < 10 else f"{value:.0f} s"


def volume_ml(value: float | None) -> str:
    """A volume: ``12.5 mL``."""
    return f"{value:.1f} mL" if _finite(value) else DASH


def gib(size_bytes: float | None) -> str:
    """A size in bytes as GiB: ``22.6 GiB``."""
    return f"{size_bytes / 2**30:.1f} GiB" if _finite(size_bytes) else DASH


def number(value: float | None) -> str:
    """Any other measured number, 4 significant digits; integers as they are."""
    if not _finite(value):
        return DASH
    return str(value) if isinstance(value, int) else f"{value:.4g}"


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


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 site``, ``2 sites``: a number with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


#: What a key of a stored record holds, by its name: the formatter to show it with.
_BY_KEY = (
    (re.compile(r"(^|_)score_difference$"), score_diff),  # shadow against active
    (re.compile(r"_diff$"), number),  # a golden test's differences: tiny, 4 significant digits
    (re.compile(r"(^|_)(score|threshold)$"), score),
    (re.compile(r"(^|_)ms_per_image$"), ms),
    (re.compile(r"(_s|_seconds)$"), seconds),
    (re.compile(r"(_ml)$"), volume_ml),
    (re.compile(r"(agreement|fraction|share|ppv)$"), percent),
)


def by_key(key: str, value: float) -> str:
    """A number stored under ``key`` (``threshold``, ``decode_s``, ``ms_per_image``...) as
    its quantity is written; a number the key does not name, with :func:`number`."""
    for pattern, formatter in _BY_KEY:
        if pattern.search(key):
            return formatter(value)
    return number(value)


_BRITISH = (
    (re.compile(r"\b([Hh])emorrhag"), r"\1aemorrhag"),
    (re.compile(r"\bHEMORRHAG"), "HAEMORRHAG"),
    (re.compile(r"\b([Hh])ematoma"), r"\1aematoma"),
    (re.compile(r"\bHEMATOMA"), "HAEMATOMA"),
)


def finding(text: str) -> str:
    """A finding as the appliance spells it (``intracranial hemorrhage`` ->
    ``intracranial haemorrhage``), whatever spelling a package's manifest used."""
    for pattern, replacement in _BRITISH:
        text = pattern.sub(replacement, text)
    return text

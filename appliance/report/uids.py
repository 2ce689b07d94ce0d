"""The UIDs of the result objects: derived, never random, so a retried job rebuilds the
same objects and another appliance, series or generation gets different ones."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: The organisation root used when none is configured: UUID-derived UIDs (PS3.5 B.2),
#: which need no registration.
UUID_ROOT = "2.25"
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UID_MAX = 64


def check_uid_root(root: str) -> str:
    """``root`` if it can prefix derived UIDs (digits and dots, no leading zeros, at most
    40 characters, leaving room for 23 digits); else ValueError (pure)."""
    if not _UID_ROOT.match(root) or len(root) > 40:
        raise ValueError(f"{root!r} is not a UID root: digits and dots, no leading zeros, at most 40 characters")
    return root


def derive_uid(root: str, *parts: str) -> str:
    """A UID under ``root`` that depends only on ``parts`` (pure).

    Under the UUID root ``2.25`` the suffix is 128 bits of the parts' SHA-256 as a
    decimal integer (a name-based UUID in PS3.5 B.2 form); under an organisation's own
    root it is as many decimal digits of the hash as fit in 64 characters (at most 39).
    """
    check_uid_root(root)
    digest = int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest(), "big")
    if root == UUID_ROOT:
        return f"{root}.{digest >> 128}"
    digits = min(_UID_MAX - len(root) - 1, 39)
    return f"{root}.{str(digest)[:digits]}"


def device_uid(root: str, install: str) -> str:
    """The Device Observer UID of the appliance with install identity ``install`` (pure)."""
    return derive_uid(root, install, "device")


@dataclass(frozen=True)
class ResultUids:
    """Series and instance UIDs of the result objects of one series generation.

    :meth:`derive` makes them from the install identity, the source series and its
    generation, so a retried job rebuilds identical objects, while another appliance,
    another series or a re-triage after a late instance gets different ones. The
    notice UIDs are used instead of the SR's when the series is not analysed.
    """

    sr_series_uid: str
    sr_instance_uid: str
    sc_series_uid: str
    sc_instance_uid: str
    notice_series_uid: str = ""
    notice_instance_uid: str = ""

    @classmethod
    def derive(cls, root: str, install: str, source_series_uid: str, generation: int) -> ResultUids:
        """Six distinct UIDs under ``root`` for this appliance, series and generation (pure).

        The series UIDs do not depend on the generation: a re-triaged series' new SR
        joins the earlier one's series in PACS, as its next version."""
        series = [
            derive_uid(root, install, source_series_uid, part) for part in ("sr-series", "sc-series", "notice-series")
        ]
        instance = [
            derive_uid(root, install, source_series_uid, str(generation), part) for part in ("sr", "sc", "notice")
        ]
        return cls(series[0], instance[0], series[1], instance[1], series[2], instance[2])

    @classmethod
    def from_key(cls, key: str) -> ResultUids:
        """UIDs under the UUID root from one stable key (tests and warm-up) (pure)."""
        return cls.derive(UUID_ROOT, key, "", 0)

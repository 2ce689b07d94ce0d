"""The hub's remote check of a box's audit chain (hostile cases A4, A5, A6).

The box anchors its hash-chained audit log beside its database
(:mod:`appliance.audit.anchor`); whoever holds the whole box can still rewrite both. So
the hub keeps an anchor of its own per device, ``devices.audit_seq``/``audit_hash``: the
chain head each drift report carried and each consistent check-in showed. Before each
check-in the box asks which sequence number the hub holds (``POST /v1/audit-anchor``)
and sends, with the check-in, its head and its chain's hash at that number as it is now.
A log cut short, emptied, or edited and re-hashed from any row up to that anchor no
longer shows the hash the hub holds. The first problem found is kept on the device
(``audit_problem``, shown on the fleet page) and the hub's anchor stops moving, so a
rewritten chain cannot become the new truth by being shown again. This module is pure;
:mod:`training.hub.service` (the writer of ``devices``) records the outcome.
"""

from __future__ import annotations

import re

_HASH = re.compile(r"^[0-9a-f]{64}$")


class BadEvidence(ValueError):
    """The check-in's ``audit`` object is not what a box sends."""


def _seq(value: object, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadEvidence(f"{path}: must be an integer >= 1")
    return value


def _hash(value: object, path: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not _HASH.match(value):
        raise BadEvidence(f"{path}: must be 64 lowercase hex digits{' or null' if nullable else ''}")
    return value


def parse(evidence: object) -> tuple[tuple[int, str] | None, tuple[int, str | None] | None]:
    """``{"head": null | {seq, hash}, "at": null | {seq, hash | null}}`` as ``(head, at)``.

    Raises
    ------
    BadEvidence
        Naming the field.
    """
    if not isinstance(evidence, dict) or set(evidence) != {"head", "at"}:
        raise BadEvidence("audit: must be {head, at}")
    head = at = None
    if evidence["head"] is not None:
        if not isinstance(evidence["head"], dict) or set(evidence["head"]) != {"seq", "hash"}:
            raise BadEvidence("audit.head: must be {seq, hash} or null")
        head = (_seq(evidence["head"]["seq"], "audit.head.seq"), _hash(evidence["head"]["hash"], "audit.head.hash"))
    if evidence["at"] is not None:
        if not isinstance(evidence["at"], dict) or set(evidence["at"]) != {"seq", "hash"}:
            raise BadEvidence("audit.at: must be {seq, hash} or null")
        at = (_seq(evidence["at"]["seq"], "audit.at.seq"), _hash(evidence["at"]["hash"], "audit.at.hash", True))
    return head, at  # type: ignore[return-value]


def problem(
    held: tuple[int, str] | None, head: tuple[int, str] | None, at: tuple[int, str | None] | None
) -> str | None:
    """What the box's evidence says is wrong against the anchor ``held`` (pure); None when
    it agrees (or the hub holds no anchor yet)."""
    if held is None:
        return None
    seq, digest = held
    if head is None:
        return f"the box's audit log is empty, yet the hub holds its anchor at seq {seq} (rows deleted)"
    if head[0] < seq:
        return f"the box's audit log ends at seq {head[0]}, before the hub's anchor at seq {seq} (cut short)"
    if at is None or at[0] != seq:
        return f"the box did not show its audit chain at seq {seq}, the anchor the hub holds"
    if at[1] is None:
        return f"seq {seq} is missing from the box's audit log (rows deleted)"
    if at[1] != digest:
        return f"the box's audit log differs from the hub's anchor at seq {seq} (rewritten and re-hashed)"
    return None

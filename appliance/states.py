"""Every state the appliance keeps, declared once.

Each enum's values are the text the database stores (and the JSON API and the pages
show), so a member compares equal to the string read back from a row and can be passed
as an SQL parameter. ``scripts/check-layers`` refuses these values as string literals
anywhere else in ``appliance/`` (:mod:`appliance.db`, whose schema checks them, aside).

Which module moves each state (the one place its transitions are written):

- :class:`SeriesState` and :class:`JobState`: :mod:`appliance.jobs`;
- :class:`StudyState`: the study summary, derived from the series (:mod:`appliance.outcome.studies`);
- :class:`ModelState`: :mod:`appliance.models.registry`;
- :class:`OutboxState`: :mod:`appliance.send.outbox`;
- :class:`ReportState` and :class:`ReleaseState`: :mod:`appliance.sync`.
"""

from __future__ import annotations

from enum import StrEnum


class SeriesState(StrEnum):
    """Where a received series stands; every series ends ``triaged``, ``not-eligible``
    or ``failed``, the last two with the reason in words."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    RUNNING = "running"
    TRIAGED = "triaged"  # the active model decided: flagged or not flagged
    NOT_ELIGIBLE = "not-eligible"  # no routing rule takes it, or outside the model's input constraints
    FAILED = "failed"  # a rule claimed it and no result came (decode, model, timeout, a bug)


#: The states a series passes through before it ends: arriving, waiting for a worker, worked on.
IN_FLIGHT = frozenset({SeriesState.RECEIVING, SeriesState.QUEUED, SeriesState.RUNNING})


class JobState(StrEnum):
    """A job: one attempt queue entry for one generation of a series."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # its series ended triaged or not-eligible
    FAILED = "failed"  # its series ended failed
    SUPERSEDED = "superseded"  # new instances arrived before a worker took it


class StudyState(StrEnum):
    """A study on the worklist, from its series, most urgent first."""

    FLAGGED = "flagged"  # a series was triaged and flagged
    FAILED = "failed"  # a series failed: part of the study went unread by the model
    PENDING = "pending"  # a series is still arriving, queued or running
    NOT_FLAGGED = "not-flagged"  # analysed, nothing flagged
    NOT_ANALYSED = "not-analysed"  # no series was eligible; the reason says why

    @property
    def words(self) -> str:
        """The state as the pages say it ("Not flagged")."""
        return self.value.replace("-", " ").capitalize()


class ModelState(StrEnum):
    """An installed model version. One version per model id is active, at most one
    shadows it; a result row's role is the state of the model that produced it."""

    INSTALLED = "installed"
    SHADOW = "shadow"  # runs beside the active version: audited and compared, never shown or sent
    ACTIVE = "active"
    RETIRED = "retired"


class OutboxState(StrEnum):
    """A result object on its way to one destination."""

    PENDING = "pending"
    SENT = "sent"  # the destination acknowledged it (warnings included)
    DEAD = "dead"  # given up on: a permanent failure, an unreadable file or too many tries


class ReportState(StrEnum):
    """A drift report queued for the central hub."""

    PENDING = "pending"
    DELIVERED = "delivered"  # the hub holds it (accepted, or a duplicate it had)
    REJECTED = "rejected"  # the hub refused it, with its reason; never sent again


class ReleaseState(StrEnum):
    """What a sync round did with a model release the hub offered."""

    SHADOW = "shadow"  # downloaded, verified, installed and staged in shadow
    REFUSED = "refused"  # the package check or the golden test refused it

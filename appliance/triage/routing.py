"""Routing rules: which model, if any, a received series goes to, and how urgently.

Rules live in ``firmware-config/routing.toml``. A series goes to the model of the first
rule whose every condition holds; a series no rule takes is ``not-eligible``, with the
first failed condition of the rules that got furthest as the reason. Priority rules raise a job's priority
(the worker takes higher first, then oldest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from appliance.config import read_toml
from appliance.errors import ConfigError
from appliance.jobs import SeriesFacts


def one_of(values: tuple[str, ...] | list[str]) -> str:
    """``HEAD, BRAIN or SKULL``: alternatives as a radiologist reads them."""
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoutingRule(_Rule):
    """Send matching series to ``model`` (a model id)."""

    name: str
    model: str
    modality: tuple[str, ...] = Field(min_length=1)
    body_part: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()
    series_description: str | None = None
    image_type_includes: tuple[str, ...] = ()
    min_instances: int = Field(1, ge=1)
    max_instances: int = Field(100_000, ge=1)
    #: The procedure the results report, as (code value, scheme designator, meaning),
    #: e.g. ("24725-4", "LN", "Head CT"); none: a generic one by modality.
    procedure_code: tuple[str, str, str] | None = None
    #: Seconds this rule's series may take (from claim to result) before it fails as
    #: "timed out"; none, or more than ``worker.series_timeout_s``: that setting.
    series_timeout_s: float | None = Field(None, gt=0)

    @field_validator("procedure_code")
    @classmethod
    def _code(cls, value: tuple[str, str, str] | None) -> tuple[str, str, str] | None:
        if value is not None and not all(part.strip() and len(part) <= 64 for part in value):
            raise ValueError("must be [code value, coding scheme designator, code meaning], none empty")
        return value

    @field_validator("series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def mismatch(self, facts: SeriesFacts) -> tuple[int, str] | None:
        """How far down its conditions the rule got (0: the modality already differs) and
        the first one ``facts`` fail, in words; None when the rule matches."""
        upper = lambda values: {v.upper() for v in values}  # noqa: E731
        if facts.modality.upper() not in upper(self.modality):
            return 0, f"modality {facts.modality or 'missing'}, not {one_of(self.modality)}"
        if self.body_part and facts.body_part.upper() not in upper(self.body_part):
            return 1, f"body part {facts.body_part or 'missing'}, not {one_of(self.body_part)}"
        if self.sop_class and facts.sop_class_uid not in self.sop_class:
            return 2, f"SOP class {facts.sop_class_uid} not routed"
        if self.series_description and not re.search(self.series_description, facts.series_description):
            return 3, f"series description does not match /{self.series_description}/"
        missing = upper(self.image_type_includes) - upper(facts.image_type)
        if missing:
            return 4, f"image type lacks {', '.join(sorted(missing))}"
        if not self.min_instances <= facts.instances <= self.max_instances:
            return 5, f"{facts.instances} images; it takes {self.min_instances} to {self.max_instances}"
        return None


class PriorityRule(_Rule):
    """Raise the priority of series from given senders or modalities."""

    name: str
    priority: int
    calling_ae: tuple[str, ...] = ()
    modality: tuple[str, ...] = ()

    def matches(self, facts: SeriesFacts) -> bool:
        return (not self.calling_ae or facts.calling_ae in self.calling_ae) and (
            not self.modality or facts.modality in self.modality
        )


class RoutingTable(_Rule):
    """The parsed ``routing.toml``."""

    rule: tuple[RoutingRule, ...] = ()
    priority: tuple[PriorityRule, ...] = ()

    def route(self, facts: SeriesFacts) -> tuple[RoutingRule | None, str]:
        """The matching rule and ``""``, or ``None`` and why nothing matched: the rules that
        got furthest, each with the condition it failed ("head CT: body part CHEST, not
        HEAD, BRAIN or SKULL"), or, when no rule takes the modality, that and the ones
        they take."""
        misses = []
        for rule in self.rule:
            miss = rule.mismatch(facts)
            if miss is None:
                return rule, ""
            misses.append((miss[0], rule, miss[1]))
        if not misses:
            return None, "no routing rules"
        furthest = max(stage for stage, _, _ in misses)
        if furthest == 0:
            taken = list(dict.fromkeys(m for rule in self.rule for m in rule.modality))
            return None, f"no routing rule takes modality {facts.modality or 'missing'} (they take {one_of(taken)})"
        closest = "; ".join(f"{rule.name}: {words}" for stage, rule, words in misses if stage == furthest)
        return None, f"no routing rule matched ({closest})"

    def priority_of(self, facts: SeriesFacts) -> int:
        return max((p.priority for p in self.priority if p.matches(facts)), default=0)


def load_routing(path: Path) -> RoutingTable:
    """Read and validate a routing file; errors name the rule and key."""
    raw: dict[str, Any] = read_toml(path)
    try:
        return RoutingTable.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {details}") from None

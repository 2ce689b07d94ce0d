"""Sums of series features over a day or a window, per model version (pure).

A series record is what the store keeps per recorded job: the input features (or None
when the series was not analysed), the score, the flag and the outcome (``"triaged"`` or
a not-analysed reason code from :func:`reason_code`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.drift.features import SCORE_EDGES
from appliance.drift.histograms import histogram
from appliance.states import SeriesState

#: Not-analysed reason codes, by words of the worker's failure reason (first match wins).
_REASONS = (
    ("decode failed", "decode-failed"),
    ("has no images", "no-images"),
    ("timed out", "timed-out"),
    ("NaN or Inf", "invalid-output"),
    ("scores for", "invalid-output"),
    ("no coded finding", "no-finding-code"),
)


def reason_code(reason: str) -> str:
    """A controlled code for a failure reason; the reason's text (which can name files
    and UIDs) never leaves the worker."""
    for words, code in _REASONS:
        if words in reason:
            return code
    return "other"


@dataclass
class Aggregate:
    """Counts over a set of series of one model version."""

    kind: str | None = None
    series: int = 0
    flagged: int = 0
    not_analysed: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, other: Aggregate) -> Aggregate:
        """This plus ``other``, as a new aggregate (bins must match)."""
        out = Aggregate(
            self.kind or other.kind,
            self.series + other.series,
            self.flagged + other.flagged,
            _add_counts(self.not_analysed, other.not_analysed),
            {k: v.copy() for k, v in self.histograms.items()},
            {k: dict(v) for k, v in self.categories.items()},
        )
        for name, counts in other.histograms.items():
            if name in out.histograms:
                if out.histograms[name].shape != counts.shape:
                    raise ValueError(f"histogram {name!r}: bins differ, cannot add")
                out.histograms[name] = out.histograms[name] + counts
            else:
                out.histograms[name] = counts.copy()
        for name, tally in other.categories.items():
            out.categories[name] = _add_counts(out.categories.get(name, {}), tally)
        return out

    def monitored_categories(self) -> dict[str, dict[str, int]]:
        """The categorical features plus the outputs as categories: flag and outcome."""
        return {
            **self.categories,
            "flag": {"flagged": self.flagged, "not flagged": self.series - self.flagged},
            "outcome": {SeriesState.TRIAGED.value: self.series, **self.not_analysed},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "series": self.series,
            "flagged": self.flagged,
            "not_analysed": self.not_analysed,
            "histograms": {k: v.tolist() for k, v in self.histograms.items()},
            "categories": self.categories,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Aggregate:
        return cls(
            d["kind"],
            int(d["series"]),
            int(d["flagged"]),
            dict(d["not_analysed"]),
            {k: np.asarray(v, np.int64) for k, v in d["histograms"].items()},
            {k: dict(v) for k, v in d["categories"].items()},
        )


def aggregate(records: Iterable[Mapping[str, Any]]) -> Aggregate:
    """Sum series records ``{"features", "score", "flag", "outcome"}`` into one aggregate."""
    total = Aggregate()
    for r in records:
        total = total.add(series_aggregate(r))
    return total


def series_aggregate(record: Mapping[str, Any]) -> Aggregate:
    """One series record as an aggregate of one."""
    if record["outcome"] != SeriesState.TRIAGED:
        return Aggregate(not_analysed={record["outcome"]: 1})
    features = record["features"]
    hists = {k: np.asarray(v, np.int64) for k, v in features["histograms"].items()}
    hists["score"] = histogram(np.array([record["score"]]), SCORE_EDGES)
    return Aggregate(
        features["kind"],
        1,
        int(bool(record["flag"])),
        {},
        hists,
        {k: {v: 1} for k, v in features["categories"].items()},
    )


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + int(v)
    return out

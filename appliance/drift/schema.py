"""The anonymised daily drift report: its envelope and the check that guards it.

The report is what leaves the box for the central hub, so its shape is closed:
:func:`check_report` refuses unknown keys anywhere, any free-text string, and any count
cell below ``k``. A suppressed cell is ``null``, except a category's: a category label
comes from text the sender wrote, so one under ``k`` is left out whole, and a
categorical count that is ``null`` (a label without its count) is refused. Strings are limited to the controlled
vocabulary (ids, versions, reason codes, feature names, category labels), all of which
must match :data:`LABEL_RE`; identifiers such as names, UIDs, serial numbers or times
cannot fit that pattern's role because nothing in the envelope accepts them.

Envelope (``schema`` = :data:`SCHEMA`; :data:`SCHEMA_V1`, the same without ``field``,
is still accepted from boxes not yet updated)::

    {"schema": "triage-drift-report/2", "report_id": "<uuid4 hex>", "day": "YYYY-MM-DD",
     "appliance_version": "x.y.z", "k": 10, "noise_epsilon": null | float,
     "models": [{"model_id": str, "model_version": str,
                 "series": int|null, "flagged": int|null,
                 "not_analysed": {"<reason code>": int|null},
                 "features": {"<name>": {"kind": "histogram", "edges": [float...],
                                         "counts": [int|null...]}
                                      | {"kind": "categorical",
                                         "counts": {"<category>": int}}},
                 "field": {"active" | "shadow": {
                     "first_day": "YYYY-MM-DD", "scored": int|null, "flagged": int|null,
                     "not_analysed": {"<reason code>": int|null},
                     "score_histogram": {"edges": [float...], "counts": [int|null...]},
                     "time_to_result_s": {"p50": float|null, "p95": float|null},
                     "agreement": null | {"both", "shadow_only", "active_only", "neither": int|null},
                     "feedback": {"flag_agreed", "flag_disagreed", "missed_finding": int|null}}}}]}

``field`` is the model version's evidence per role (:mod:`appliance.drift.evidence`):
the day's counts, and the agreement and feedback to date.

This module is pure (no I/O) so the hub can copy it verbatim.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

from appliance.errors import ReportError
from appliance.states import ModelState

#: Schema tag of this envelope version.
SCHEMA = "triage-drift-report/2"
#: The first version (no ``field``), still accepted.
SCHEMA_V1 = "triage-drift-report/1"
SCHEMAS = (SCHEMA_V1, SCHEMA)

#: Controlled labels: ids, reason codes, feature names, category labels.
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")
_UUID_HEX_RE = re.compile(r"^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VERSION_RE = re.compile(
    r"^(?=.{5,64}$)(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)

_TOP_KEYS = {"schema", "report_id", "day", "appliance_version", "k", "noise_epsilon", "models"}
_MODEL_KEYS = {"model_id", "model_version", "series", "flagged", "not_analysed", "features"}
_MODEL_KEYS_V2 = _MODEL_KEYS | {"field"}
_ROLES = {ModelState.ACTIVE.value, ModelState.SHADOW.value}
_FIELD_KEYS = {
    "first_day",
    "scored",
    "flagged",
    "not_analysed",
    "score_histogram",
    "time_to_result_s",
    "agreement",
    "feedback",
}
_AGREEMENT_KEYS = {"both", "shadow_only", "active_only", "neither"}
_FEEDBACK_KEYS = {"flag_agreed", "flag_disagreed", "missed_finding"}
_QUANTILE_KEYS = {"p50", "p95"}
_HIST_KEYS = {"kind", "edges", "counts"}
_CAT_KEYS = {"kind", "counts"}
_MAX_BINS = 512


def check_report(obj: dict) -> None:
    """Raise :class:`ReportError` naming the offending field path unless ``obj`` is a valid report.

    Parameters
    ----------
    obj : dict
        A decoded report (e.g. ``json.loads`` of what the box sent).

    Raises
    ------
    ReportError
        The first rule broken, with the field path (e.g. ``models[0].features.hu.counts[3]``).
    """
    _require_dict(obj, "report")
    _keys(obj, _TOP_KEYS, _TOP_KEYS, "report")
    if obj["schema"] not in SCHEMAS:
        raise ReportError(f"schema: expected one of {', '.join(map(repr, SCHEMAS))}")
    _match(obj["report_id"], _UUID_HEX_RE, "report_id", "a uuid4 in lowercase hex (32 digits)")
    _day(obj["day"], "day")
    _match(obj["appliance_version"], _VERSION_RE, "appliance_version", "a version x.y.z")
    k = obj["k"]
    if not _is_int(k) or k < 1:
        raise ReportError("k: must be an integer >= 1")
    eps = obj["noise_epsilon"]
    if eps is not None and (
        not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0
    ):
        raise ReportError("noise_epsilon: must be null or a finite number > 0")
    models = obj["models"]
    if not isinstance(models, list):
        raise ReportError("models: must be a list")
    keys = _MODEL_KEYS_V2 if obj["schema"] == SCHEMA else _MODEL_KEYS
    for i, model in enumerate(models):
        _check_model(model, k, f"models[{i}]", keys, obj["day"])


def _check_model(m: Any, k: int, path: str, keys: set, day: str) -> None:
    _require_dict(m, path)
    _keys(m, keys, keys, path)
    if "field" in keys:
        _field(m["field"], k, f"{path}.field", day)
    _match(m["model_id"], LABEL_RE, f"{path}.model_id", "a controlled label")
    _match(m["model_version"], _VERSION_RE, f"{path}.model_version", "a version x.y.z")
    _cell(m["series"], k, f"{path}.series")
    _cell(m["flagged"], k, f"{path}.flagged")
    _label_counts(m["not_analysed"], k, f"{path}.not_analysed")
    features = m["features"]
    _require_dict(features, f"{path}.features")
    for name, feat in features.items():
        fpath = f"{path}.features.{name}"
        if not isinstance(name, str) or not LABEL_RE.match(name):
            raise ReportError(f"{path}.features: key {name!r} is not a controlled feature name")
        _require_dict(feat, fpath)
        kind = feat.get("kind")
        if kind == "histogram":
            _keys(feat, _HIST_KEYS, _HIST_KEYS, fpath)
            _histogram(feat, k, fpath)
        elif kind == "categorical":
            _keys(feat, _CAT_KEYS, _CAT_KEYS, fpath)
            _label_counts(feat["counts"], k, f"{fpath}.counts", blank_allowed=False)
        else:
            raise ReportError(f"{fpath}.kind: must be 'histogram' or 'categorical'")


def _field(d: Any, k: int, path: str, day: str) -> None:
    _require_dict(d, path)
    for role, stats in d.items():
        if role not in _ROLES:
            raise ReportError(f"{path}.{role}: unknown role (must be one of {', '.join(sorted(_ROLES))})")
        rpath = f"{path}.{role}"
        _require_dict(stats, rpath)
        _keys(stats, _FIELD_KEYS, _FIELD_KEYS, rpath)
        _day(stats["first_day"], f"{rpath}.first_day")
        if stats["first_day"] > day:
            raise ReportError(f"{rpath}.first_day: after the report's day")
        _cell(stats["scored"], k, f"{rpath}.scored")
        _cell(stats["flagged"], k, f"{rpath}.flagged")
        _label_counts(stats["not_analysed"], k, f"{rpath}.not_analysed")
        histogram = stats["score_histogram"]
        _require_dict(histogram, f"{rpath}.score_histogram")
        _keys(histogram, _HIST_KEYS - {"kind"}, _HIST_KEYS - {"kind"}, f"{rpath}.score_histogram")
        _histogram(histogram, k, f"{rpath}.score_histogram")
        quantiles = stats["time_to_result_s"]
        _require_dict(quantiles, f"{rpath}.time_to_result_s")
        _keys(quantiles, _QUANTILE_KEYS, _QUANTILE_KEYS, f"{rpath}.time_to_result_s")
        for name in sorted(_QUANTILE_KEYS):
            q = quantiles[name]
            if q is not None and (
                not isinstance(q, (int, float)) or isinstance(q, bool) or not math.isfinite(q) or q < 0
            ):
                raise ReportError(f"{rpath}.time_to_result_s.{name}: must be null or a finite number >= 0")
        if stats["agreement"] is not None:
            _cells(stats["agreement"], _AGREEMENT_KEYS, k, f"{rpath}.agreement")
        _cells(stats["feedback"], _FEEDBACK_KEYS, k, f"{rpath}.feedback")


def _cells(d: Any, keys: set, k: int, path: str) -> None:
    _require_dict(d, path)
    _keys(d, keys, keys, path)
    for name in sorted(keys):
        _cell(d[name], k, f"{path}.{name}")


def _histogram(feat: dict, k: int, path: str) -> None:
    edges, counts = feat["edges"], feat["counts"]
    if not isinstance(edges, list) or not 2 <= len(edges) <= _MAX_BINS + 1:
        raise ReportError(f"{path}.edges: must be a list of 2..{_MAX_BINS + 1} numbers")
    for j, e in enumerate(edges):
        if not isinstance(e, (int, float)) or isinstance(e, bool) or not math.isfinite(e):
            raise ReportError(f"{path}.edges[{j}]: must be a finite number")
        if j and e <= edges[j - 1]:
            raise ReportError(f"{path}.edges[{j}]: edges must increase strictly")
    if not isinstance(counts, list) or len(counts) != len(edges) - 1:
        raise ReportError(f"{path}.counts: must be a list of len(edges) - 1 = {len(edges) - 1} cells")
    for j, c in enumerate(counts):
        _cell(c, k, f"{path}.counts[{j}]")


def _label_counts(d: Any, k: int, path: str, blank_allowed: bool = True) -> None:
    _require_dict(d, path)
    for label, c in d.items():
        if not isinstance(label, str) or not LABEL_RE.match(label):
            raise ReportError(f"{path}: key {label!r} is not a controlled label")
        if c is None and not blank_allowed:
            raise ReportError(f"{path}.{label}: a category under k must be left out, label and all, not null")
        _cell(c, k, f"{path}.{label}")


def _cell(c: Any, k: int, path: str) -> None:
    if c is None:
        return
    if not _is_int(c):
        raise ReportError(f"{path}: must be an integer or null")
    if c < k:
        raise ReportError(f"{path}: {c} is below k={k}; it must be suppressed (null)")


def _keys(d: dict, required: set, allowed: set, path: str) -> None:
    for key in d:
        if key not in allowed:
            raise ReportError(f"{path}.{key}: unknown key")
    for key in sorted(required):
        if key not in d:
            raise ReportError(f"{path}.{key}: missing")


def _require_dict(d: Any, path: str) -> None:
    if not isinstance(d, dict):
        raise ReportError(f"{path}: must be an object")


def _match(s: Any, pattern: re.Pattern, path: str, what: str) -> None:
    if not isinstance(s, str) or not pattern.match(s):
        raise ReportError(f"{path}: must be {what}")


def _day(s: Any, path: str) -> None:
    _match(s, _DAY_RE, path, "a day YYYY-MM-DD")
    try:
        _dt.date.fromisoformat(s)
    except ValueError:
        raise ReportError(f"{path}: {s!r} is not a calendar day") from None


def _is_int(c: Any) -> bool:
    return isinstance(c, int) and not isinstance(c, bool)

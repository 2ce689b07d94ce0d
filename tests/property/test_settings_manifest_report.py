"""The other parsers of what arrives from outside: a settings file, a package manifest, a
drift report. Whatever they are given they return a checked object or raise the one
error of their kind (ConfigError, PackageError, ReportError) naming the problem; and
what a drift report that passes carries is only counts of k or more under controlled
labels."""

from __future__ import annotations

import base64
import copy
import json
import math

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import load_settings
from appliance.drift.schema import LABEL_RE, check_report
from appliance.errors import ConfigError, PackageError, ReportError
from appliance.models.manifest import public_key_b64
from appliance.models.package import _check_signature_and_schema
from tests.helpers.hub import HEAD_PACKAGE, SHIPPED, make_report
from tests.helpers.packages import members

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)
TOML_VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str), st.booleans().map(lambda b: str(b).lower()),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=40).map(json.dumps), st.lists(st.text(max_size=20), max_size=3).map(json.dumps))
KEYS = {"dicom": ["port", "ae_title", "peers", "destinations", "max_associations", "acse_timeout_s",
                  "quiet_period_s", "open_mode", "min_free_disk_mb", "bind_address"],
        "web": ["port", "session_idle_minutes", "login_failures_per_user", "allowed_hosts", "max_upload_mb"]}


@given(st.sampled_from(sorted(KEYS)).flatmap(lambda s: st.tuples(st.just(s), st.sampled_from(KEYS[s]))), TOML_VALUES)
def test_a_settings_file_is_loaded_or_refused_naming_the_key(tmp_path_factory, section_key, value):
    section, key = section_key
    path = tmp_path_factory.mktemp("toml") / "appliance.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    try:
        load_settings(path, environ={})
    except ConfigError as exc:
        assert f"{section}.{key}" in str(exc) or "TOML" in str(exc), str(exc)


KEY = Ed25519PrivateKey.generate()


def signed_check(manifest: object) -> None:
    data = json.dumps(manifest, allow_nan=True).encode()
    try:
        _check_signature_and_schema(_Path(), data, KEY.sign(data), None)
    except PackageError as exc:
        assert str(exc).startswith("package.tar: "), str(exc)


class _Path:
    name = "package.tar"


SHIPPED_MANIFEST = json.loads(members(HEAD_PACKAGE)["manifest.json"])


def _valid_manifest() -> dict:
    """The shipped head-CT manifest, signed by this module's key."""
    return {**copy.deepcopy(SHIPPED_MANIFEST), "signing_public_key": public_key_b64(KEY.public_key())}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, (*prefix, i))


MANIFEST_PATHS = [p for p in _paths(_valid_manifest()) if p and p[0] != "signing_public_key"]
REPORT_PATHS = [p for p in _paths(make_report()) if p]


def _replace(obj, path, value):
    obj = copy.deepcopy(obj)
    target = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return obj


@given(st.sampled_from(MANIFEST_PATHS), JSON)
def test_a_manifest_with_any_field_replaced_is_read_or_refused_naming_it(path, value):
    signed_check(_replace(_valid_manifest(), path, value))


@given(JSON)
def test_a_manifest_of_any_shape_is_refused_naming_why(value):
    signed_check(value)


def test_the_valid_manifest_of_these_properties_is_accepted():
    data = json.dumps(_valid_manifest()).encode()
    assert _check_signature_and_schema(_Path(), data, KEY.sign(data), None).id == "head-ct-ich-demo"
    assert base64.b64decode(_valid_manifest()["signing_public_key"])


def _check(report: object) -> bool:
    try:
        check_report(report)
    except ReportError as exc:
        assert str(exc), exc
        return False
    return True


def _only_controlled_counts(report: dict) -> None:
    k = report["k"]
    for model in report["models"]:
        for feature in model["features"].values():
            cells = feature["counts"].items() if isinstance(feature["counts"], dict) else enumerate(feature["counts"])
            for label, count in cells:
                assert count is None or count >= k
                if isinstance(feature["counts"], dict):
                    assert LABEL_RE.match(label) and count is not None


@given(st.sampled_from(REPORT_PATHS), JSON)
def test_a_drift_report_with_any_field_replaced_is_checked_or_refused(path, value):
    report = _replace(make_report(), path, value)
    if _check(report):
        _only_controlled_counts(report)


@given(st.dictionaries(st.text(max_size=70), st.one_of(st.none(), st.integers(-5, 50)), min_size=1, max_size=4),
       st.integers(1, 20))
def test_a_categorical_feature_passes_only_with_controlled_labels_and_counts_of_k(counts, k):
    report = make_report()
    report["k"] = k
    report["models"][0]["flagged"] = None
    report["models"][0]["not_analysed"] = {}
    report["models"][0]["features"] = {"manufacturer_model": {"kind": "categorical", "counts": counts}}
    if _check(report):
        _only_controlled_counts(report)
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in counts.values())

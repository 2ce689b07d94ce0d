"""Installing, shadowing, activating and rolling back real signed packages."""

from __future__ import annotations

import json

import pytest

from appliance.audit import chain as audit_log
from appliance.db import open_database
from appliance.errors import ModelConflict, PackageError
from appliance.models.registry import ModelRegistry, version_key
from tests.helpers.packages import rebuilt


@pytest.fixture
def registry(tmp_path, quick_packages):
    db = open_database(tmp_path / "a.db")
    return ModelRegistry(db, tmp_path / "models", [quick_packages["public_key"]])


def audit_kinds(registry) -> list[str]:
    return [row[0] for row in registry.db.conn.execute("SELECT kind FROM audit_log ORDER BY seq")]


def test_semantic_versions_order_numerically_with_prereleases_first():
    assert sorted(["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9"], key=version_key) == [
        "0.9.9", "1.2.0-rc.1", "1.2.0", "1.10.0"]


def test_activation_golden_tests_every_backend_and_records_the_fastest(registry, quick_packages):
    model = registry.install(quick_packages["head-ct"], "test")
    assert model.state == "installed" and (model.path / "package.tar").is_file()
    active = registry.activate(model.id, model.version, "test")
    assert active.state == "active"
    trials = active.selection["trials"]
    assert {(t["backend"], t["precision"]) for t in trials} == {
        (v.backend, v.precision) for v in model.manifest.variants}
    passing = [t for t in trials if t["passed"]]
    fastest = min(passing, key=lambda t: t["ms_per_image"])
    assert active.selection["chosen"] == f"{fastest['backend']}/{fastest['device']}/{fastest['precision']}"
    assert audit_kinds(registry) == ["model-installed", "model-active"]
    assert audit_log.verify_database(registry.db) == []


def test_untrusted_tampered_and_older_packages_are_refused(registry, quick_packages, tmp_path):
    other = ModelRegistry(registry.db, registry.models_dir, [quick_packages["public_key"].with_name("nope.pub")])
    with pytest.raises(PackageError, match="trusted key"):
        other.install(quick_packages["head-ct"], "test")

    key = quick_packages["private_key"]
    newer = rebuilt(quick_packages["head-ct"], key, tmp_path, "1.1.0")
    registry.install(newer, "test")
    with pytest.raises(PackageError, match="older than installed 1.1.0"):
        registry.install(quick_packages["head-ct"], "test")
    (tmp_path / "rebuild").mkdir()
    same_version = rebuilt(quick_packages["head-ct"], key, tmp_path / "rebuild", "1.1.0", break_golden=True)
    with pytest.raises(PackageError, match="already installed with different contents"):
        registry.install(same_version, "test")


def test_a_model_failing_its_golden_test_is_refused_and_the_active_one_stays(registry, quick_packages, tmp_path):
    good = registry.install(quick_packages["head-ct"], "test")
    registry.activate(good.id, good.version, "test")
    broken = registry.install(rebuilt(quick_packages["head-ct"], quick_packages["private_key"], tmp_path,
                                      "1.0.1", break_golden=True), "test")
    with pytest.raises(PackageError, match="no variant passed its golden test"):
        registry.activate(broken.id, broken.version, "test")
    assert [(m.version, m.state) for m in registry.models()] == [("1.0.0", "active"), ("1.0.1", "installed")]


def test_shadow_then_activate_then_explicit_rollback(registry, quick_packages, tmp_path):
    first = registry.install(quick_packages["head-ct"], "test")
    registry.activate(first.id, first.version, "test")
    second = registry.install(rebuilt(quick_packages["head-ct"], quick_packages["private_key"], tmp_path, "1.1.0"), "test")
    registry.shadow(second.id, second.version, "test")
    assert {m.version: m.state for m in registry.models()} == {"1.0.0": "active", "1.1.0": "shadow"}
    registry.activate(second.id, second.version, "test")
    assert {m.version: m.state for m in registry.models()} == {"1.0.0": "retired", "1.1.0": "active"}
    assert registry.rollback_target(first.id).version == "1.0.0"
    back = registry.rollback(first.id, "biomed:alice")
    assert back.version == "1.0.0" and back.state == "active"
    assert {m.version: m.state for m in registry.models()} == {"1.0.0": "active", "1.1.0": "retired"}
    last = json.loads(registry.db.conn.execute(
        "SELECT payload FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert last["from"] == "1.1.0" and last["to"] == "1.0.0" and last["actor"] == "biomed:alice"
    assert audit_kinds(registry)[-1] == "model-rolled-back"


def test_shadowing_the_active_version_or_rolling_back_past_the_first_is_refused_and_changes_nothing(
        registry, quick_packages):
    """Issue 26: shadowing the active version demoted it, and the next series failed."""
    first = registry.install(quick_packages["head-ct"], "test")
    assert registry.rollback_target(first.id) is None  # nothing active yet
    with pytest.raises(ModelConflict, match="no active version"):
        registry.rollback(first.id, "test")
    registry.activate(first.id, first.version, "test")
    with pytest.raises(ModelConflict, match="is the active version: shadowing it would leave .* no active model"):
        registry.shadow(first.id, first.version, "test")
    assert registry.rollback_target(first.id) is None
    with pytest.raises(ModelConflict, match="no earlier version to roll back to"):
        registry.rollback(first.id, "test")
    assert {m.version: m.state for m in registry.models()} == {"1.0.0": "active"}
    assert audit_kinds(registry) == ["model-installed", "model-active"]


def test_golden_dicom_series_are_checked_end_to_end_and_catch_a_preprocessing_regression(tmp_path, quick_packages):

    from appliance.triage import pipeline

    db = open_database(tmp_path / "g.db")
    registry = ModelRegistry(db, tmp_path / "models", [quick_packages["public_key"]],
                             golden_series_inputs=pipeline.golden_series_inputs)
    model = registry.install(quick_packages["head-ct"], "test")
    cases = model.manifest.golden_series
    assert cases and {c.label for c in cases} <= {0, 1}
    assert all(c.flag == (c.score >= model.manifest.operating_point.threshold) for c in cases)
    selection, _ = registry.qualify(model)
    assert all(t["series_checked"] for t in selection["trials"]) and any(t["passed"] for t in selection["trials"])

    def wrong_windows(manifest, model_dir):  # a preprocessing regression: the bone window twice
        broken = manifest.input.model_copy(update={"windows": [manifest.input.windows[2]] * len(manifest.input.windows)})
        return pipeline.golden_series_inputs(manifest.model_copy(update={"input": broken}), model_dir)

    bad = ModelRegistry(db, tmp_path / "models", [quick_packages["public_key"]], golden_series_inputs=wrong_windows)
    with pytest.raises(PackageError, match="golden series diff"):
        bad.qualify(model)


def test_golden_series_the_box_cannot_decode_refuse_the_model(tmp_path, quick_packages):
    from appliance.errors import InferenceError

    def cannot_decode(manifest, model_dir):
        raise InferenceError("decode failed: unsupported transfer syntax")

    registry = ModelRegistry(open_database(tmp_path / "d.db"), tmp_path / "models", [quick_packages["public_key"]],
                             golden_series_inputs=cannot_decode)
    model = registry.install(quick_packages["chest-cr"], "test")
    with pytest.raises(PackageError, match="golden series cannot be decoded"):
        registry.activate(model.id, model.version, "test")
    assert registry.get(model.id, model.version).state == "installed"


def test_an_install_first_removes_what_a_killed_install_left_and_keeps_every_installed_model(
        registry, quick_packages, tmp_path):
    """A kill -9 mid-install skips its clean-up: the unpacking folder and the package copy
    (killed while reading), or a whole version folder with no registry row (killed before
    the row). The next install removes those and nothing that has a row."""
    kept = registry.install(quick_packages["head-ct"], "test")
    models = registry.models_dir
    (models / ".incoming-dead").mkdir()
    (models / ".incoming-dead" / "model.onnx").write_bytes(b"half")
    (models / ".incoming-dead.tar").write_bytes(b"half a package")
    (models / kept.id / "9.9.9").mkdir()
    (models / kept.id / "9.9.9" / "model.onnx").write_bytes(b"unpacked, never registered")
    (models / "another-model" / "1.0.0").mkdir(parents=True)

    newer = registry.install(rebuilt(quick_packages["head-ct"], quick_packages["private_key"], tmp_path, "1.1.0"),
                             "test")
    assert sorted(p.relative_to(models).as_posix() for p in models.glob("*/*")) == [
        f"{kept.id}/1.0.0", f"{kept.id}/1.1.0"]
    assert not list(models.glob(".incoming-*"))
    assert (kept.path / "package.tar").is_file() and (newer.path / "package.tar").is_file()
    assert [(m.version, m.state) for m in registry.models()] == [("1.0.0", "installed"), ("1.1.0", "installed")]

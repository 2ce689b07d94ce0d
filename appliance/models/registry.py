"""Installed model packages and their states (:class:`~appliance.states.ModelState`).

Versions of a model id only move forward: a package older than one already installed is
refused; going back is an explicit :meth:`ModelRegistry.rollback` by a biomed user. One
model is active per id (the id is what routing rules name), at most one shadows it.
Every change is an audit event. Activating or shadowing runs the golden test on every
backend this box has (:mod:`appliance.models.qualify`); a model that fails it is
refused and the active one stays.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

from appliance import failpoints
from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.errors import ModelConflict, PackageError
from appliance.models.backends import Runtime, Target, available_targets, load
from appliance.models.manifest import Manifest
from appliance.models.package import read_package
from appliance.models.qualify import Golden, choose, try_variants
from appliance.states import ModelState

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")


def version_key(version: str) -> tuple:
    """Semantic-version order: 1.2.0-rc1 < 1.2.0 < 1.10.0 (pure)."""
    match = _SEMVER.match(version)
    if not match:
        raise PackageError(f"version {version!r} is not semantic")
    major, minor, patch, pre = match.groups()
    pre_key = (0, tuple(int(p) if p.isdigit() else p for p in pre.split("."))) if pre else (1, ())
    return int(major), int(minor), int(patch), pre_key


@dataclass(frozen=True)
class InstalledModel:
    """A row of the registry."""

    id: str
    version: str
    state: ModelState
    package_sha256: str
    path: Path
    manifest: Manifest
    selection: dict | None

    @property
    def label(self) -> str:
        return f"{self.id} {self.version}"

    def load_chosen(self) -> Runtime:
        """Load the variant chosen at activation on its target again (no new trials)."""
        if not self.selection:
            raise PackageError(f"{self.label} has no chosen backend: shadow or activate it first")
        backend, device, precision = self.selection["chosen"].split("/")
        variant = next(v for v in self.manifest.variants if v.backend == backend and v.precision == precision)
        return load(
            Target(backend, device),
            [self.path / f for f in variant.files],
            precision,
            variant.options,
            (self.manifest.outputs.score, self.manifest.outputs.cam),
        )


class ModelRegistry:
    """The models table plus the extracted packages under ``models_dir``."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        models_dir: Path,
        trusted_keys: list[Path],
        pin_backend: str | None = None,
        golden_series_inputs: Callable[[Manifest, Path], list[np.ndarray]] | None = None,
    ):
        """``golden_series_inputs(manifest, model_dir)`` decodes and preprocesses the
        package's golden DICOM series with the box's pipeline (``appliance.triage.pipeline.
        golden_series_inputs``; injected because this stage may not import triage). Without
        it qualification checks the golden tensors only and each trial says
        ``series_checked: false``."""
        self.db = db
        self.models_dir = models_dir
        self.trusted_keys = trusted_keys
        self.pin_backend = pin_backend
        self.golden_series_inputs = golden_series_inputs

    # Reading ------------------------------------------------------------------------
    def _row(self, row: tuple) -> InstalledModel:
        model_id, version, state, sha, path, manifest, selection = row
        return InstalledModel(
            model_id,
            version,
            ModelState(state),
            sha,
            Path(path),
            Manifest.model_validate_json(manifest),
            json.loads(selection) if selection else None,
        )

    def models(self) -> list[InstalledModel]:
        rows = self.db.conn.execute("SELECT id, version, state, package_sha256, path, manifest, selection FROM models")
        return sorted((self._row(r) for r in rows), key=lambda m: (m.id, version_key(m.version)))

    def get(self, model_id: str, version: str) -> InstalledModel:
        row = self.db.conn.execute(
            "SELECT id, version, state, package_sha256, path, manifest, selection FROM models "
            "WHERE id = ? AND version = ?",
            (model_id, version),
        ).fetchone()
        if row is None:
            raise PackageError(f"model {model_id} {version} is not installed")
        return self._row(row)

    def in_state(self, state: ModelState) -> list[InstalledModel]:
        return [m for m in self.models() if m.state == state]

    # Changes ------------------------------------------------------------------------
    def install(self, package: Path, actor: str) -> InstalledModel:
        """Verify and unpack a package (one read of the file, which is kept beside what it
        unpacks as ``package.tar``); refuse one older than what is installed, or a version
        installed before with other contents.

        Installs are serialised across processes (the web, ``models install``, sync); each
        first removes what a killed install left behind (:meth:`_remove_leftovers`)."""
        with self._install_lock():
            self._remove_leftovers()
            return self._install(package, actor)

    @contextmanager
    def _install_lock(self) -> Iterator[None]:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with open(self.models_dir / ".install.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _remove_leftovers(self) -> None:
        """Remove a killed install's files (call with the install lock held): unpacking
        folders and copies (``.incoming-*``) and version folders the registry has no row
        for (unpacked, killed before the row)."""
        registered = {(m.id, m.version) for m in self.models()}
        leftovers = list(self.models_dir.glob(".incoming-*"))
        leftovers += [
            version
            for model in self.models_dir.iterdir()
            if model.is_dir() and not model.name.startswith(".")
            for version in model.iterdir()
            if version.is_dir() and (model.name, version.name) not in registered
        ]
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _install(self, package: Path, actor: str) -> InstalledModel:
        incoming = self.models_dir / f".incoming-{uuid.uuid4().hex}"
        copy = incoming.with_name(incoming.name + ".tar")
        try:
            read = read_package(package, self.trusted_keys, into=incoming, copy_to=copy)
            failpoints.hit("mid-unpack")  # unpacked and copied under .incoming-*; nothing in place yet
            manifest, sha = read.manifest, read.sha256
            already = self._check_new(manifest, sha)
            if already is not None:
                return already
            target = self.models_dir / manifest.id / manifest.version
            os.replace(copy, incoming / "package.tar")
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            incoming.rename(target)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
            copy.unlink(missing_ok=True)
        failpoints.hit("mid-install")  # the files are in place; the registry has no row yet
        now = time.time()
        with transaction(self.db.conn):
            self.db.conn.execute(
                "INSERT INTO models (id, version, state, package_sha256, path, manifest, installed_at, "
                "changed_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    manifest.id,
                    manifest.version,
                    ModelState.INSTALLED,
                    sha,
                    str(target),
                    manifest.model_dump_json(),
                    now,
                    now,
                ),
            )
            audit_log.append_in(
                self.db.conn,
                "model-installed",
                {
                    "model_id": manifest.id,
                    "version": manifest.version,
                    "package_sha256": sha,
                    "signing_key": manifest.signing_key_id,
                    "actor": actor,
                },
            )
        return self.get(manifest.id, manifest.version)

    def _check_new(self, manifest: Manifest, sha: str) -> InstalledModel | None:
        """The installed model when this exact package is installed already; PackageError
        when its version is installed with other contents or is older than one installed."""
        installed = [m for m in self.models() if m.id == manifest.id]
        for model in installed:
            if model.version == manifest.version:
                if model.package_sha256 == sha:
                    return model
                raise PackageError(
                    f"{manifest.id} {manifest.version} is already installed with "
                    "different contents; a new build needs a new version"
                )
        newest = max((m.version for m in installed), key=version_key, default=None)
        if newest is not None and version_key(manifest.version) < version_key(newest):
            raise PackageError(
                f"{manifest.id} {manifest.version} is older than installed {newest}; "
                "versions only move forward (use rollback to go back)"
            )
        return None

    def qualify(self, model: InstalledModel) -> tuple[dict, Runtime]:
        """Golden-test every variant on every target and choose one (PackageError if none)."""
        golden = Golden.read(model.path / model.manifest.golden)
        series_inputs = None
        if self.golden_series_inputs is not None and model.manifest.golden_series:
            try:
                series_inputs = self.golden_series_inputs(model.manifest, model.path)
            except Exception as exc:  # the box cannot read its own golden cases: refuse the model
                raise PackageError(
                    f"{model.label}: golden series cannot be decoded and preprocessed on this box: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        trials = try_variants(model.manifest, model.path, available_targets(), golden, series_inputs)
        chosen, runtime = choose(trials, self.pin_backend)
        return {"chosen": chosen.label, "trials": [t.as_dict() for t, _ in trials]}, runtime

    def activate(self, model_id: str, version: str, actor: str) -> InstalledModel:
        """Make a model the active one for its id; the previous active one is retired."""
        return self._promote(model_id, version, ModelState.ACTIVE, actor)

    def shadow(self, model_id: str, version: str, actor: str) -> InstalledModel:
        """Run a model beside the active one, audited and compared, never shown or sent."""
        return self._promote(model_id, version, ModelState.SHADOW, actor)

    def _promote(self, model_id: str, version: str, state: ModelState, actor: str) -> InstalledModel:
        model = self.get(model_id, version)
        if model.state == state:
            return model
        if state == ModelState.SHADOW and model.state == ModelState.ACTIVE:
            raise ModelConflict(
                f"{model.label} is the active version: shadowing it would leave {model_id} with no active "
                f"model, and every new series would fail. Shadow another version, or activate another "
                f"version first."
            )
        selection, _ = self.qualify(model)  # raises before anything changes
        now = time.time()
        with transaction(self.db.conn):
            previous = self.db.conn.execute(
                "SELECT version FROM models WHERE id = ? AND state = ?", (model_id, state)
            ).fetchone()
            if previous:
                self._set_state(model_id, previous[0], ModelState.RETIRED, now)
            self._set_state(model_id, version, state, now, selection)
            audit_log.append_in(
                self.db.conn,
                f"model-{state}",
                {
                    "model_id": model_id,
                    "version": version,
                    "replaces": previous[0] if previous else None,
                    "backend": selection["chosen"],
                    "trials": selection["trials"],
                    "actor": actor,
                },
            )
        return self.get(model_id, version)

    def withdraw(self, model_id: str, version: str, actor: str) -> InstalledModel:
        """Stop running a shadow (or merely installed) version whose release was withdrawn:
        it is retired, audited. An active version is left as it is: activation, and
        so deactivation, stays a person's decision."""
        model = self.get(model_id, version)
        if model.state not in (ModelState.SHADOW, ModelState.INSTALLED):
            return model
        with transaction(self.db.conn):
            self._set_state(model_id, version, ModelState.RETIRED, time.time())
            audit_log.append_in(
                self.db.conn,
                "model-withdrawn",
                {"model_id": model_id, "version": version, "was": model.state.value, "actor": actor},
            )
        return self.get(model_id, version)

    def rollback_target(self, model_id: str) -> InstalledModel | None:
        """The version a rollback would activate: the newest installed one older than the
        active version (None without an active version or an earlier one)."""
        versions = [m for m in self.models() if m.id == model_id]
        active = next((m for m in versions if m.state == ModelState.ACTIVE), None)
        if active is None:
            return None
        older = [m for m in versions if version_key(m.version) < version_key(active.version)]
        return older[-1] if older else None

    def rollback(self, model_id: str, actor: str) -> InstalledModel:
        """Retire the active version and activate the newest older one that was installed."""
        current = next((m for m in self.in_state(ModelState.ACTIVE) if m.id == model_id), None)
        if current is None:
            raise ModelConflict(f"{model_id} has no active version to roll back")
        target = self.rollback_target(model_id)
        if target is None:
            raise ModelConflict(
                f"{current.label} is the earliest version installed: there is no earlier version to roll back to"
            )
        selection, _ = self.qualify(target)
        now = time.time()
        with transaction(self.db.conn):
            self._set_state(model_id, current.version, ModelState.RETIRED, now)
            self._set_state(model_id, target.version, ModelState.ACTIVE, now, selection)
            audit_log.append_in(
                self.db.conn,
                "model-rolled-back",
                {
                    "model_id": model_id,
                    "from": current.version,
                    "to": target.version,
                    "backend": selection["chosen"],
                    "actor": actor,
                },
            )
        return self.get(model_id, target.version)

    def _set_state(
        self, model_id: str, version: str, state: ModelState, now: float, selection: dict | None = None
    ) -> None:
        """The one place a model changes state (in the caller's transaction); a new
        ``selection`` (the backend chosen by qualification) replaces the old one."""
        self.db.conn.execute(
            "UPDATE models SET state = ?, selection = coalesce(?, selection), changed_at = ? "
            "WHERE id = ? AND version = ?",
            (state, None if selection is None else json.dumps(selection), now, model_id, version),
        )

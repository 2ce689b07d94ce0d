"""The hub's TUF repository (python-tuf): root, targets, snapshot and timestamp roles.

Layout under ``DATA_DIR/tuf``::

    metadata/1.root.json, 2.root.json ...   every root version (clients walk them)
    metadata/root.json                      the newest root (what a box pins at enrolment)
    metadata/targets.json snapshot.json timestamp.json
    targets/<model id>-<version>.tar        the signed model packages
    online-keys/snapshot.pem timestamp.pem  the keys the serving hub holds

The root and targets keys live in a folder the operator names (``--offline-keys``,
removable media in production): they sign at ``init`` and ``publish`` only and never sit
on the serving machine's disk otherwise. Snapshot and timestamp are re-signed by the
running hub with short expiry (:data:`SNAPSHOT_EXPIRY`, :data:`TIMESTAMP_EXPIRY`), so a
box that stops hearing from the hub sees its release metadata go stale within a day.

Every target carries custom fields ``model_id``, ``version``, ``min_appliance_version`` and
``ring``. Files are written to a temporary name and renamed, timestamp last, so a box
reading mid-publish sees the old state or the new, never a mix.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

ROOT_EXPIRY = timedelta(days=365)
TARGETS_EXPIRY = timedelta(days=365)
SNAPSHOT_EXPIRY = timedelta(days=7)
TIMESTAMP_EXPIRY = timedelta(days=1)
RINGS = ("pilot", "all")
_SERIALIZER = JSONSerializer(compact=False)


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).replace(microsecond=0)


class Repository:
    """The TUF repository of one hub.

    Parameters
    ----------
    data_dir : Path
        The hub's data dir; the repository lives in ``data_dir / "tuf"``.
    """

    def __init__(self, data_dir: Path):
        self.root_dir = data_dir / "tuf"
        self.metadata_dir = self.root_dir / "metadata"
        self.targets_dir = self.root_dir / "targets"
        self.online_keys = self.root_dir / "online-keys"

    # Keys ----------------------------------------------------------------------------
    @staticmethod
    def _signer(folder: Path, role: str, create: bool) -> CryptoSigner:
        path = folder / f"{role}.pem"
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"{path}: the {role} key is not in this folder")
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            signer = CryptoSigner.generate_ed25519()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as stream:
                stream.write(signer.private_bytes)
            return signer
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        return CryptoSigner(key)

    @contextmanager
    def _locked(self):
        """One writer at a time: the serving hub's re-signing and a ``publish`` command."""
        self.root_dir.mkdir(parents=True, exist_ok=True)
        with open(self.root_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # Reading -------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.metadata_dir / "root.json").exists()

    def load(self, role: str) -> Metadata:
        return Metadata.from_bytes((self.metadata_dir / f"{role}.json").read_bytes())

    def root_bytes(self) -> bytes:
        """The newest root metadata: what a box pins when it enrols."""
        return (self.metadata_dir / "root.json").read_bytes()

    # Writing -------------------------------------------------------------------------
    def _write(self, name: str, metadata: Metadata) -> None:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        path = self.metadata_dir / name
        temporary = path.with_name(f".{name}.tmp")
        temporary.write_bytes(metadata.to_bytes(_SERIALIZER))
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)

    def init(self, offline_keys: Path, now: datetime | None = None) -> bool:
        """Create keys and version 1 of every role; False if the repository exists."""
        with self._locked():
            return self._init(offline_keys, now)

    def _init(self, offline_keys: Path, now: datetime | None) -> bool:
        if self.initialised:
            return False
        now = _utc(now)
        signers = {role: self._signer(offline_keys, role, create=True) for role in ("root", "targets")}
        signers.update({role: self._signer(self.online_keys, role, create=True)
                        for role in ("snapshot", "timestamp")})
        root = Root(expires=now + ROOT_EXPIRY, consistent_snapshot=False)
        for role, signer in signers.items():
            root.add_key(signer.public_key, role)
        root_md = Metadata(root)
        root_md.sign(signers["root"])
        targets_md = Metadata(Targets(expires=now + TARGETS_EXPIRY))
        targets_md.sign(signers["targets"])
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self._write("targets.json", targets_md)
        self._write("1.root.json", root_md)
        self._write("root.json", root_md)
        self._refresh_online(now, force=True)
        return True

    def publish(self, package: Path, offline_keys: Path, *, model_id: str, version: str, ring: str,
                min_appliance_version: str, now: datetime | None = None) -> TargetFile:
        """Add a package as a target (signed with the offline targets key), then re-sign
        snapshot and timestamp."""
        with self._locked():
            return self._publish(package, offline_keys, model_id, version, ring, min_appliance_version, now)

    def _publish(self, package: Path, offline_keys: Path, model_id: str, version: str, ring: str,
                 min_appliance_version: str, now: datetime | None) -> TargetFile:
        if ring not in RINGS:
            raise ValueError(f"ring {ring!r}: must be one of {', '.join(RINGS)}")
        now = _utc(now)
        name = f"{model_id}-{version}.tar"
        destination = self.targets_dir / name
        targets_md = self.load("targets")
        if name in targets_md.signed.targets:
            try:
                targets_md.signed.targets[name].verify_length_and_hashes(package.read_bytes())
            except LengthOrHashMismatchError:
                raise ValueError(f"{name} is already published with different contents; "
                                 "a new build needs a new version") from None
            return targets_md.signed.targets[name]
        temporary = destination.with_name(f".{name}.tmp")
        shutil.copyfile(package, temporary)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, destination)
        target = TargetFile.from_file(name, str(destination), ["sha256"])
        target.unrecognized_fields["custom"] = {
            "model_id": model_id, "version": version, "ring": ring,
            "min_appliance_version": min_appliance_version}
        targets_md.signed.targets[name] = target
        self._publish_targets(targets_md, offline_keys, now)
        return target

    def set_ring(self, name: str, ring: str, offline_keys: Path, now: datetime | None = None) -> None:
        """Move a published target to another ring (targets re-signed with the offline key),
        then re-sign snapshot and timestamp."""
        if ring not in RINGS:
            raise ValueError(f"ring {ring!r}: must be one of {', '.join(RINGS)}")
        with self._locked():
            now = _utc(now)
            targets_md = self.load("targets")
            if name not in targets_md.signed.targets:
                raise ValueError(f"{name} is not published")
            targets_md.signed.targets[name].unrecognized_fields["custom"]["ring"] = ring
            self._publish_targets(targets_md, offline_keys, now)

    def remove_target(self, name: str, offline_keys: Path, now: datetime | None = None) -> None:
        """Stop offering a target (a withdrawn release): targets re-signed without it."""
        with self._locked():
            now = _utc(now)
            targets_md = self.load("targets")
            if targets_md.signed.targets.pop(name, None) is None:
                return
            self._publish_targets(targets_md, offline_keys, now)

    def _publish_targets(self, targets_md: Metadata, offline_keys: Path, now: datetime) -> None:
        """Write the changed targets as their next version, signed with the offline key, then
        re-sign snapshot and timestamp (the caller holds the lock)."""
        targets_md.signed.version += 1
        targets_md.signed.expires = now + TARGETS_EXPIRY
        targets_md.signatures.clear()
        targets_md.sign(self._signer(offline_keys, "targets", create=False))
        self._write("targets.json", targets_md)
        self._refresh_online(now, force=True)

    def refresh_online(self, now: datetime | None = None, force: bool = False) -> bool:
        """Re-sign snapshot and timestamp with the online keys when they near expiry (or
        targets changed, or ``force``). Returns True when anything was signed."""
        with self._locked():
            return self._refresh_online(now, force)

    def _refresh_online(self, now: datetime | None, force: bool) -> bool:
        now = _utc(now)
        targets = self.load("targets").signed
        try:
            snapshot_md = self.load("snapshot")
            timestamp_md = self.load("timestamp")
            fresh = False
        except FileNotFoundError:
            snapshot_md = Metadata(Snapshot(expires=now))
            timestamp_md = Metadata(Timestamp(expires=now))
            fresh = force = True
        snapshot = snapshot_md.signed
        listed = snapshot.meta.get("targets.json")
        stale_snapshot = listed is None or listed.version != targets.version
        if force or stale_snapshot or snapshot.expires - now < SNAPSHOT_EXPIRY / 2:
            snapshot.meta["targets.json"] = MetaFile(version=targets.version)
            snapshot.version += 0 if fresh else 1
            snapshot.expires = now + SNAPSHOT_EXPIRY
            snapshot_md.signatures.clear()
            snapshot_md.sign(self._signer(self.online_keys, "snapshot", create=False))
            self._write("snapshot.json", snapshot_md)
            force = True
        timestamp = timestamp_md.signed
        if force or timestamp.expires - now < TIMESTAMP_EXPIRY / 2:
            timestamp.snapshot_meta = MetaFile(version=snapshot.version)
            timestamp.version += 0 if fresh else 1
            timestamp.expires = now + TIMESTAMP_EXPIRY
            timestamp_md.signatures.clear()
            timestamp_md.sign(self._signer(self.online_keys, "timestamp", create=False))
            self._write("timestamp.json", timestamp_md)
            return True
        return False

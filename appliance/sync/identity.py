"""The box's identity: one ed25519 key pair made once in the data dir, and what the hub
told it at enrolment (device id, hub URL, ring, the pinned TUF root).

The private key never leaves this file: it is created with mode 0600 and only its public
half is ever sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.errors import SyncError


def sync_dir(data_dir: Path) -> Path:
    return data_dir / "sync"


def key_path(data_dir: Path) -> Path:
    return sync_dir(data_dir) / "device.key"


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The device key, created on first use with mode 0600 (refused if others can read it)."""
    path = key_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create_key(data_dir)
        with os.fdopen(fd, "wb") as stream:
            stream.write(pem)
            stream.flush()
            os.fsync(stream.fileno())
        return key
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SyncError(f"{path}: device key is readable by others (mode {mode:o}); chmod 600 it")
    stored = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(stored, Ed25519PrivateKey):
        raise SyncError(f"{path}: not an ed25519 private key")
    return stored


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key, the only part that is sent."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Enrolment:
    """What the hub answered at enrolment."""

    hub_url: str
    device_id: str
    ring: str

    @staticmethod
    def path(data_dir: Path) -> Path:
        return sync_dir(data_dir) / "enrolment.json"

    @staticmethod
    def root_path(data_dir: Path) -> Path:
        """The TUF root metadata pinned at enrolment: the trust anchor of every release."""
        return sync_dir(data_dir) / "pinned-root.json"

    @classmethod
    def load(cls, data_dir: Path) -> Enrolment:
        try:
            return cls(**json.loads(cls.path(data_dir).read_text()))
        except FileNotFoundError:
            raise SyncError("this box is not enrolled: run `appliance sync enrol --hub URL --token T`") from None

    def save_ring(self, data_dir: Path) -> None:
        """Rewrite the enrolment alone (the hub moved this box to another ring); the pinned root stays."""
        _write_atomically(self.path(data_dir), json.dumps(asdict(self), indent=2).encode())

    def save(self, data_dir: Path, pinned_root: bytes) -> None:
        _write_atomically(self.root_path(data_dir), pinned_root)
        _write_atomically(self.path(data_dir), json.dumps(asdict(self), indent=2).encode())


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)

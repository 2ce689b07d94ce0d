"""Build and sign model packages (format: :mod:`appliance.models.package`).

Keys are ed25519: the private key as unencrypted PKCS#8 PEM (mode 0600), the public key
as SubjectPublicKeyInfo PEM. The tar is written deterministically (sorted members,
zero mtimes and owners) with ``manifest.json`` and ``manifest.json.sig`` first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.models.package import MANIFEST_NAME, SIGNATURE_NAME, Manifest, public_key_b64
from training.backends import Runner

#: Tolerance floors of the golden check per precision: (score, cam).
TOLERANCE_FLOOR = {"fp32": (1e-4, 1e-3), "int8": (0.02, 0.25)}
#: Measured golden differences are multiplied by this to leave room for other CPUs.
TOLERANCE_MARGIN = 4.0


def generate_keypair(private_path: Path) -> tuple[Path, Path]:
    """Write a new ed25519 private key at ``private_path`` and its public key beside it (``.pub``)."""
    private_path = Path(private_path)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an ed25519 private key written by :func:`generate_keypair`."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 private key")
    return key


def golden(inputs: np.ndarray, reference: Runner, variants: dict[str, tuple[str, Runner]]) -> tuple[bytes, dict[str, dict]]:
    """Golden file (npz: ``input``, ``score``, ``cam`` from ``reference``) and tolerances.

    ``variants`` maps a variant key to ``(precision, runner)``; each tolerance is the
    measured max difference times :data:`TOLERANCE_MARGIN`, at least the precision's floor.
    """
    score, cam = reference(inputs)
    buf = io.BytesIO()
    np.savez(buf, input=inputs.astype(np.float32), score=score.astype(np.float32), cam=cam.astype(np.float32))
    tolerances = {}
    for key, (precision, runner) in variants.items():
        s, c = runner(inputs)
        floor_s, floor_c = TOLERANCE_FLOOR[precision]
        tolerances[key] = {
            "score_atol": max(floor_s, TOLERANCE_MARGIN * float(np.max(np.abs(s - score)))),
            "cam_atol": max(floor_c, TOLERANCE_MARGIN * float(np.max(np.abs(c - cam)))),
        }
    return buf.getvalue(), tolerances


def write_package(out: Path, manifest: dict, files: dict[str, bytes], key: Ed25519PrivateKey) -> Manifest:
    """Complete ``manifest`` (files with sha256, signing key), validate, sign and write the tar.

    Parameters
    ----------
    out : Path
        The package file to write.
    manifest : dict
        Manifest fields except ``files`` and ``signing_public_key``.
    files : dict
        Archive path -> content, for every file but the manifest and its signature.
    key : Ed25519PrivateKey
        The signing key.
    """
    full = dict(manifest)
    full["files"] = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in sorted(files.items())]
    full["signing_public_key"] = public_key_b64(key.public_key())
    validated = Manifest.model_validate(full)
    manifest_bytes = json.dumps(full, indent=2, sort_keys=True).encode()
    _write_tar(out, {MANIFEST_NAME: manifest_bytes, SIGNATURE_NAME: key.sign(manifest_bytes), **dict(sorted(files.items()))})
    return validated


def resign_package(src: Path, out: Path, key: Ed25519PrivateKey) -> Manifest:
    """Re-sign an existing package with ``key`` (its manifest names the new key)."""
    with tarfile.open(src, "r:*") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    manifest = json.loads(members.pop(MANIFEST_NAME))
    members.pop(SIGNATURE_NAME, None)
    manifest.pop("files", None)
    manifest.pop("signing_public_key", None)
    return write_package(out, manifest, members, key)


def _write_tar(out: Path, members: dict[str, bytes]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)

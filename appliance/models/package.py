"""The model package file: one pass that reads, checks and (optionally) unpacks it.

A package is one tar file (optionally compressed) holding, in this order::

    manifest.json        the manifest (schema: :mod:`appliance.models.manifest`), signed
    manifest.json.sig    detached ed25519 signature (64 raw bytes) over manifest.json
    <every other file>   listed in ``manifest.files`` with its sha256 and size

:func:`read_package` reads the file once, front to back (a stream: no seek, no second
read), and checks, in order: the archive is a tar of regular files with safe relative
names (no links, no ``..``, no absolute paths, no duplicates); the two first members,
then the signature (against the trusted keys) and the manifest schema, before any other
member is read; each later member must be listed with the size its tar header declares
before a byte of it is inflated (an unsigned 3 MB archive holding a 3 GiB member is
refused at that member's header), and is hashed as it passes (and written under ``into``
when asked); at the end every listed file's presence and sha256; last, that every
``.onnx`` file parses and that each external-data location it names is a file of the
package (a model pointing its weights at ``../../etc/passwd`` would otherwise be read
from outside it). What it unpacked becomes
visible at ``into`` only once every check passed. Any failure raises
:class:`appliance.errors.PackageError` saying exactly what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from appliance.errors import PackageError
from appliance.models.manifest import Manifest, check_member_name, key_id, public_key_from_b64
from appliance.models.onnx_refs import NotOnnx, external_locations

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Package:
    """A package file that passed every check."""

    manifest: Manifest
    sha256: str  # of the whole file, as read


def verify_package(path: Path, trusted_public_keys: list[Path] | None) -> Manifest:
    """Check a package's archive, signature, manifest and files; return its manifest.

    Parameters
    ----------
    path : Path
        The package (``.tar``, optionally gzip-compressed).
    trusted_public_keys : list of Path or None
        PEM ed25519 public keys; the manifest must be signed by one of them. ``None``
        only checks that the signature matches the key the manifest names (proves the
        package is intact since signing, not who signed it).

    Raises
    ------
    PackageError
        With a message naming the problem (member, field or file).
    """
    return read_package(Path(path), trusted_public_keys).manifest


def extract_package(path: Path, dest: Path, trusted_public_keys: list[Path] | None) -> Manifest:
    """Verify a package and unpack it as ``dest`` (which must not exist, or be empty);
    return its manifest. One read: see :func:`read_package`."""
    return read_package(Path(path), trusted_public_keys, into=Path(dest)).manifest


def read_package(
    path: Path, trusted_public_keys: list[Path] | None, into: Path | None = None, copy_to: Path | None = None
) -> Package:
    """Read a package once and check it (see the module's docstring).

    Parameters
    ----------
    into : Path, optional
        Unpack the members here (created; it must not exist, or be empty). The files are
        written beside it while they are read and moved into place only when every check
        passed; on a failure nothing is left.
    copy_to : Path, optional
        Also keep a byte-for-byte copy of the package file here (written as it is read;
        removed on a failure).

    Raises
    ------
    PackageError
        With a message naming the problem (member, field or file).
    """
    trusted = None if trusted_public_keys is None else [load_public_key(p) for p in trusted_public_keys]
    if into is not None and into.exists() and any(into.iterdir()):
        raise PackageError(f"{into}: not empty; a package unpacks into a new folder")
    staging = None if into is None else into.with_name(f".{into.name}.{uuid.uuid4().hex}")
    try:
        with tempfile.TemporaryDirectory(prefix="package-models-") as spare:
            scan = _read_once(path, staging, copy_to, Path(spare), trusted)
            manifest = scan.verified
            assert manifest is not None  # _read_once refuses a package without both first members
            _check_files(path, manifest, scan.digests)
            _check_external_data(path, scan.models, scan.digests)  # read only once the signature holds
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if copy_to is not None:
            copy_to.unlink(missing_ok=True)
        raise
    if into is not None and staging is not None:
        if into.exists():
            into.rmdir()
        os.replace(staging, into)
    return Package(manifest, scan.sha256)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an ed25519 public key (PEM, SubjectPublicKeyInfo); PackageError if it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PackageError(f"trusted key {path}: cannot read it ({e.strerror or e})") from e
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise PackageError(f"trusted key {path}: not a PEM public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError(f"trusted key {path}: not an ed25519 public key")
    return key


@dataclass
class _Scan:
    """What one pass over the archive found."""

    digests: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (size, sha256)
    models: dict[str, Path] = field(default_factory=dict)  # each .onnx, on disk until the signature holds
    manifest: bytes = b""
    signature: bytes = b""
    sha256: str = ""
    verified: Manifest | None = None  # once the two first members passed the signature check


class _Reader:
    """The package file read front to back: every byte hashed, and copied when asked."""

    def __init__(self, stream: BinaryIO, copy: BinaryIO | None):
        self.stream, self.copy, self.digest = stream, copy, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        if self.copy is not None:
            self.copy.write(data)
        return data


def _read_once(
    path: Path, staging: Path | None, copy_to: Path | None, spare: Path, trusted: list[Ed25519PublicKey] | None
) -> _Scan:
    """Walk the tar as a stream: check each member, hash it (writing it under ``staging``
    when given), keep the manifest and the signature, and the ONNX models on disk (under
    ``staging``, else ``spare``: never in memory before the signature holds); then the
    rest of the file (tar padding, compression trailer), so the hash covers every byte."""
    scan = _Scan()
    try:
        stream = open(path, "rb")
    except FileNotFoundError as e:
        raise PackageError(f"{path}: no such package file") from e
    except OSError as e:
        raise PackageError(f"{path.name}: not a readable tar archive ({e})") from e
    with stream, open(copy_to, "wb") if copy_to is not None else nullcontext() as copy:
        reader = _Reader(stream, copy)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                for member in tar:
                    _member(path, tar, member, scan, staging, spare)
                    if scan.verified is None and {MANIFEST_NAME, SIGNATURE_NAME} <= set(scan.digests):
                        scan.verified = _check_signature_and_schema(path, scan.manifest, scan.signature, trusted)
            while reader.read(_CHUNK):
                pass
        except tarfile.ReadError as e:
            if not scan.digests and not scan.manifest:
                raise PackageError(f"{path.name}: not a readable tar archive ({e})") from e
            raise PackageError(f"{path.name}: corrupt tar archive ({e})") from e
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PackageError(f"{path.name}: corrupt tar archive ({e})") from e
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        if name not in scan.digests:
            unsigned = " (unsigned package)" if name == SIGNATURE_NAME else ""
            raise PackageError(f"{path.name}: missing file {name!r}{unsigned}")
    del scan.digests[MANIFEST_NAME], scan.digests[SIGNATURE_NAME]
    scan.sha256 = reader.digest.hexdigest()
    return scan


def _member(
    path: Path, tar: tarfile.TarFile, m: tarfile.TarInfo, scan: _Scan, staging: Path | None, spare: Path
) -> None:
    """Check, hash (and write) one member as the stream passes it."""
    check_member_name(m.name)
    if m.issym():
        raise PackageError(
            f"{path.name}: member {m.name!r} is a symlink (to {m.linkname!r}); only regular files are allowed"
        )
    if m.islnk():
        raise PackageError(
            f"{path.name}: member {m.name!r} is a hardlink (to {m.linkname!r}); only regular files are allowed"
        )
    if not m.isreg():
        raise PackageError(f"{path.name}: member {m.name!r} is not a regular file; only regular files are allowed")
    if m.name in scan.digests:
        raise PackageError(f"{path.name}: member {m.name!r} appears more than once")
    special = m.name in (MANIFEST_NAME, SIGNATURE_NAME)
    if special and m.size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{path.name}: {m.name} is too large ({m.size} bytes)")
    if not special:
        _check_listed(path, m, scan)
    source = _member_file(tar, m)
    kept = bytearray() if special else None
    digest = hashlib.sha256()
    model = m.name.endswith(".onnx")
    target = staging / m.name if staging is not None else spare / m.name if model else None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") if target is not None else nullcontext() as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            if kept is not None:
                kept += chunk
            if out is not None:
                out.write(chunk)
    scan.digests[m.name] = (m.size, digest.hexdigest())
    if m.name == MANIFEST_NAME:
        scan.manifest = bytes(kept or b"")
    elif m.name == SIGNATURE_NAME:
        scan.signature = bytes(kept or b"")
    elif target is not None and model:
        scan.models[m.name] = target


def _check_listed(path: Path, m: tarfile.TarInfo, scan: _Scan) -> None:
    """Before a byte of member ``m`` is read: the signed manifest came first and lists it
    with the size its tar header declares."""
    if scan.verified is None:
        absent = MANIFEST_NAME if MANIFEST_NAME not in scan.digests else SIGNATURE_NAME
        unsigned = " (unsigned package)" if absent == SIGNATURE_NAME else ""
        raise PackageError(
            f"{path.name}: missing file {absent!r}{unsigned}: a package starts with {MANIFEST_NAME} and "
            f"{SIGNATURE_NAME}, and {m.name!r} came first"
        )
    entry = next((f for f in scan.verified.files if f.path == m.name), None)
    if entry is None:
        raise PackageError(f"{path.name}: extra file {m.name!r} (in archive, not listed in manifest)")
    if entry.size != m.size:
        raise PackageError(
            f"{path.name}: hash mismatch for {m.name!r}: manifest says sha256 {entry.sha256} ({entry.size} "
            f"bytes), archive has {m.size} bytes (refused before reading it)"
        )


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """A regular member's contents as a stream."""
    stream = tar.extractfile(member)
    if stream is None:
        raise PackageError(f"member {member.name!r} is not a regular file")
    return stream


def onnx_external_locations(name: str, data: bytes) -> list[str]:
    """The external-data locations an ONNX model names; :class:`PackageError` if unreadable."""
    try:
        return external_locations(data)
    except NotOnnx as e:
        raise PackageError(f"{name}: not a readable ONNX model ({e})") from e


def _check_external_data(path: Path, models: dict[str, Path], digests: dict[str, tuple[int, str]]) -> None:
    """Each location, relative to its model's folder, must be a listed file of the package."""
    for model_name, model_file in sorted(models.items()):
        folder = posixpath.dirname(model_name)
        for location in onnx_external_locations(f"{path.name}: {model_name}", model_file.read_bytes()):
            target = posixpath.normpath(posixpath.join(folder, location)) if location else ""
            if (
                not location
                or location.startswith("/")
                or "\\" in location
                or re.match(r"^[A-Za-z]:", location)
                or target == ".."
                or target.startswith("../")
                or target not in digests
            ):
                raise PackageError(
                    f"{path.name}: {model_name}: external data location {location!r} is not a file of the package"
                )


def _check_signature_and_schema(
    path: Path, manifest_bytes: bytes, signature: bytes, trusted: list[Ed25519PublicKey] | None
) -> Manifest:
    try:
        raw = json.loads(manifest_bytes)
    except RecursionError:
        raise PackageError(f"{path.name}: malformed manifest: manifest.json is nested too deeply") from None
    except ValueError as e:  # not JSON, not UTF-8, or an integer past Python's 4300 digits
        raise PackageError(f"{path.name}: malformed manifest: manifest.json is not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise PackageError(f"{path.name}: malformed manifest: top level must be an object")
    try:
        signer = public_key_from_b64(str(raw.get("signing_public_key", "")))
    except ValueError as e:
        raise PackageError(f"{path.name}: malformed manifest: field 'signing_public_key': {e}") from e
    try:
        signer.verify(signature, manifest_bytes)
    except InvalidSignature as e:
        raise PackageError(
            f"{path.name}: bad signature: manifest.json does not match manifest.json.sig "
            f"for its signing key {key_id(signer)} (modified after signing, or corrupt signature)"
        ) from e
    if trusted is not None:
        trusted_ids = [key_id(k) for k in trusted]
        if key_id(signer) not in trusted_ids:
            raise PackageError(
                f"{path.name}: untrusted key: signed by key {key_id(signer)}, "
                f"trusted keys are {', '.join(trusted_ids) or 'none'}"
            )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"field '{'.'.join(str(x) for x in err['loc']) or '<root>'}': {err['msg']}" for err in e.errors()
        )
        raise PackageError(f"{path.name}: malformed manifest: {problems}") from e


def _check_files(path: Path, manifest: Manifest, digests: dict[str, tuple[int, str]]) -> None:
    listed = {f.path: f for f in manifest.files}
    for name in sorted(set(listed) - set(digests)):
        raise PackageError(f"{path.name}: missing file {name!r} (listed in manifest, absent from archive)")
    for name in sorted(set(digests) - set(listed)):
        raise PackageError(f"{path.name}: extra file {name!r} (in archive, not listed in manifest)")
    for name, entry in sorted(listed.items()):
        size, sha = digests[name]
        if sha != entry.sha256 or size != entry.size:
            raise PackageError(
                f"{path.name}: hash mismatch for {name!r}: manifest says sha256 {entry.sha256} "
                f"({entry.size} bytes), archive has {sha} ({size} bytes)"
            )

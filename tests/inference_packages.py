"""Derive test packages from a real one: another version, broken golden outputs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from training.package import load_private_key, write_package


def _members(package: Path) -> tuple[dict, dict[str, bytes]]:
    with tarfile.open(package) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    manifest = json.loads(members.pop("manifest.json"))
    members.pop("manifest.json.sig")
    manifest.pop("files")
    manifest.pop("signing_public_key")
    return manifest, members


def rebuilt(package: Path, key: Path, out: Path, version: str, break_golden: bool = False,
            threshold: float | None = None) -> Path:
    """The same model re-signed as ``version``; with ``break_golden`` its expected
    outputs no longer match what the model computes; with ``threshold`` another
    operating point (0.0 flags every series, 1.0 almost none)."""
    manifest, files = _members(package)
    manifest["version"] = version
    if threshold is not None:
        manifest["operating_point"]["threshold"] = threshold
    if break_golden:
        with np.load(io.BytesIO(files[manifest["golden"]])) as golden:
            arrays = {name: golden[name] for name in golden.files}
        arrays["score"] = 1.0 - arrays["score"]
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        files[manifest["golden"]] = buffer.getvalue()
    target = out / f"{manifest['id']}-{version}.tar"
    write_package(target, manifest, files, load_private_key(key))
    return target

"""Fixtures: two key pairs and a small valid signed package (no model training needed)."""

from pathlib import Path

import pytest

from tests.helpers.packages import FILES, manifest_fields
from training.package import generate_keypair, load_private_key, write_package


@pytest.fixture
def keys(tmp_path):
    good = generate_keypair(tmp_path / "keys" / "good.key")
    other = generate_keypair(tmp_path / "keys" / "other.key")
    return {"private": good[0], "public": good[1], "other_private": other[0], "other_public": other[1]}


@pytest.fixture
def package(tmp_path, keys) -> Path:
    out = tmp_path / "pkg.tar"
    write_package(out, manifest_fields(), dict(FILES), load_private_key(keys["private"]))
    return out


"""The install identity: created once per data folder, kept across restarts."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.errors import StorageError
from appliance.installation import FILE_NAME, install_id


def test_created_once_and_kept_across_restarts(tmp_path):
    first = install_id(tmp_path / "data")
    assert uuid.UUID(first).version == 4
    assert install_id(tmp_path / "data") == first  # a restart reads the same file
    assert (tmp_path / "data" / FILE_NAME).read_text().strip() == first
    assert [p.name for p in (tmp_path / "data").iterdir()] == [FILE_NAME]  # no temporary left behind


def test_fresh_data_folders_get_different_identities(tmp_path):
    assert install_id(tmp_path / "a") != install_id(tmp_path / "b")


def test_processes_starting_together_agree(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(lambda _: install_id(tmp_path / "data"), range(32)))
    assert len(seen) == 1


def test_a_damaged_file_is_an_error_not_a_new_identity(tmp_path):
    (tmp_path / FILE_NAME).write_text("not a uuid\n")
    with pytest.raises(StorageError, match="does not hold a UUID"):
        install_id(tmp_path)

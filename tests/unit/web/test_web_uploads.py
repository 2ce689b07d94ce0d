"""The upload cap counts the bytes read from the body, not what the headers claim."""

from __future__ import annotations

import asyncio
import errno
import shutil

import pytest
from starlette.requests import Request

from appliance.config import load_settings
from appliance.parts import Parts
from appliance.errors import AccessError
from appliance.web import uploads
from appliance.web.app import create_app
from appliance.web.uploads import UploadTooLarge, receive_to_file, upload_dir

CHUNK = 64 * 1024


def _request(chunks: int, headers: list[tuple[bytes, bytes]]) -> tuple[Request, list[int]]:
    pulled = []

    async def receive():
        pulled.append(CHUNK)
        return {"type": "http.request", "body": b"\0" * CHUNK, "more_body": len(pulled) < chunks}

    scope = {"type": "http", "method": "POST", "path": "/api/models", "headers": headers, "query_string": b""}
    return Request(scope, receive), pulled


def test_a_body_past_the_cap_is_cut_there_and_removed(tmp_path):
    cap = 10 * CHUNK
    request, pulled = _request(100, [(b"content-length", b"1000")])  # the header lies
    with pytest.raises(UploadTooLarge, match="limit"):
        asyncio.run(receive_to_file(request, tmp_path, cap))
    assert sum(pulled) == cap + CHUNK  # stopped at the first chunk past the cap
    assert list(tmp_path.iterdir()) == []


def test_a_declared_length_past_the_cap_is_refused_before_reading(tmp_path):
    request, pulled = _request(100, [(b"content-length", str(100 * CHUNK).encode())])
    with pytest.raises(UploadTooLarge):
        asyncio.run(receive_to_file(request, tmp_path, 10 * CHUNK))
    assert pulled == []


def test_a_body_within_the_cap_is_kept_whole(tmp_path):
    request, _ = _request(3, [])
    path = asyncio.run(receive_to_file(request, tmp_path, 10 * CHUNK))
    assert path.stat().st_size == 3 * CHUNK


def test_uploads_a_killed_process_left_are_removed_when_the_web_app_starts(tmp_path, monkeypatch):
    """Issue 24, R6-kill-during-upload. Before: a 277 MB upload-*.part stayed after restart."""
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    folder = upload_dir(tmp_path)
    folder.mkdir()
    (folder / "upload-aabf5a0347099b2a.part").write_bytes(b"\0" * 1024)
    (folder / "README").write_text("not an upload")
    create_app(Parts(load_settings()))
    assert sorted(p.name for p in folder.iterdir()) == ["README"]


def test_an_upload_keeps_the_spools_free_space_floor_and_a_full_disk_is_named(tmp_path, monkeypatch):
    """Issue 24, R4-upload-full-disk. Before: 500 Internal Server Error."""
    free = shutil.disk_usage(tmp_path).free
    request, pulled = _request(3, [(b"content-length", str(3 * CHUNK).encode())])
    with pytest.raises(AccessError, match="not enough free disk for the upload"):
        asyncio.run(receive_to_file(request, tmp_path, 10 * CHUNK, min_free_bytes=free))
    assert pulled == [] and list(tmp_path.iterdir()) == []

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    request, _ = _request(3, [])
    monkeypatch.setattr(uploads.os, "fsync", full)
    with pytest.raises(AccessError, match="could not be written: No space left on device"):
        asyncio.run(receive_to_file(request, tmp_path, 10 * CHUNK))
    assert list(tmp_path.iterdir()) == []

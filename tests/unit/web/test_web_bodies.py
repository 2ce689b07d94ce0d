"""Form and JSON bodies are small; a multipart one is refused before any of it is read."""

from __future__ import annotations

import tempfile

import pytest
from fastapi.testclient import TestClient

from appliance.config import load_settings
from appliance.parts import Parts
from appliance.web.app import create_app
from appliance.web.bodies import MAX_FORM_BYTES


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    return TestClient(create_app(Parts(load_settings())), base_url="http://127.0.0.1")


def test_a_multipart_sign_in_is_refused_before_its_file_is_spooled(client, tmp_path, monkeypatch):
    """Issue 24, W18-multipart-login. Before: 403 after 1.06 GB was spooled to /tmp."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    answer = client.post("/login", data={"name": "x", "password": "y"},
                         files={"big": ("big.bin", b"\0" * (4 * 1024 * 1024))})
    assert answer.status_code == 415 and "multipart" in answer.json()["error"]
    assert list(spool.iterdir()) == []


def test_a_form_past_the_cap_is_refused_declared_or_not(client):
    big = {"name": "x", "password": "y" * (MAX_FORM_BYTES + 1)}
    assert client.post("/login", data=big).status_code == 413

    def chunks():
        for _ in range(4):
            yield b"name=x&password=" + b"y" * (MAX_FORM_BYTES // 2)

    answer = client.post("/login", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and "body over" in answer.json()["error"]
    assert client.post("/login", data={"name": "x", "password": "y"}).status_code == 403  # CSRF, as before

"""Only requests that name this box in their Host header are served (DNS rebinding)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from appliance.config import load_settings
from appliance.parts import Parts
from appliance.web.app import create_app
from appliance.web.security import known_host

NAMES = frozenset({"localhost", "triage.example.org"})


@pytest.mark.parametrize(
    ("host", "known"),
    [
        ("127.0.0.1:8080", True),
        ("10.1.2.3", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("TRIAGE.example.org.", True),
        ("evil.example", False),
        ("evil.example:8080", False),
        ("triage.example.org.evil.example", False),
        ("", False),
        ("[::1", False),
    ],
)
def test_the_host_header_must_be_an_address_or_one_of_our_names(host, known):
    assert known_host(host, NAMES) is known


def test_a_foreign_host_is_refused_before_any_route(tmp_path, monkeypatch):
    """Issue 24, W9-host-header. Before: sign-in via Host: evil.example answered 303 to /,
    and /readyz 200."""
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APPLIANCE_WEB_ALLOWED_HOSTS", "triage.example.org")
    app = create_app(Parts(load_settings()))
    for base in ("http://evil.example", "http://127.0.0.1.evil.example:8080"):
        client = TestClient(app, base_url=base)
        for answer in (client.get("/healthz"), client.get("/login"), client.post("/login")):
            assert answer.status_code == 400 and "unknown Host" in answer.json()["error"]
            assert answer.headers["X-Frame-Options"] == "DENY"
    for base in ("http://127.0.0.1:8080", "http://triage.example.org"):
        assert TestClient(app, base_url=base).get("/healthz").json() == {"status": "alive"}

"""The hub answers a body it cannot read with 400 naming the problem, never 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from training.hub.app import create_app
from training.hub.repository import Repository
from training.hub.store import HubDatabase


@pytest.fixture
def client(tmp_path):
    return TestClient(create_app(HubDatabase(str(tmp_path / "hub.db")), Repository(tmp_path)))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"token": ' + b"7" * 5000 + b"}", "integer string conversion"),
        (b'{"token": "\xff\xfe"}', "codec can't decode"),
        (b"{not json", "Expecting property name"),
    ],
    ids=["deep-100k", "5000-digit-integer", "bad-utf8", "not-json"],
)
@pytest.mark.parametrize("path", ["/v1/enrol", "/v1/reports", "/v1/checkin"])
def test_a_body_the_hub_cannot_read_is_a_400_naming_why(client, path, body, words):
    """Issue 24, H6-malformed. Before: deep JSON and a 5000-digit integer gave 500."""
    answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and words in answer.json()["error"]

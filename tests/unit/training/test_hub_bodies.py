"""The hub answers a body it cannot read with 400 naming the problem, never 500."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from training.hub.app import create_app
from training.hub.repository import Repository
from training.hub.service import create_operator_token
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


def test_an_oversized_body_is_refused_as_it_arrives_not_after_it_is_buffered(tmp_path):
    """Issue 24, H5-oversize-body. Before: the whole body was read into memory first
    (1 GB anonymous to /v1/enrol: hub RSS +2 GB before the 413)."""
    app = create_app(HubDatabase(str(tmp_path / "hub.db")), Repository(tmp_path))
    chunk, chunks = bytes(1 << 20), 64
    received, answer = 0, {}

    async def receive():
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": received < chunks}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/enrol", "raw_path": b"/v1/enrol", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    assert answer["status"] == 413 and received <= 17


def test_the_fleet_page_is_for_operators_only(tmp_path):
    """Issue 24, H8-fleet-anon. Before: 200 to anyone, with device ids and site names."""
    db = HubDatabase(str(tmp_path / "hub.db"))
    client = TestClient(create_app(db, Repository(tmp_path)))
    anonymous = client.get("/fleet")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/fleet", headers={"Authorization": "Bearer guessed"}).status_code == 401
    token = create_operator_token(db, "biomed lead", 1.0)
    assert client.get("/fleet", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/fleet", auth=("anyone", token)).status_code == 200

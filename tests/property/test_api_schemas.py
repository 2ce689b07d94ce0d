"""schemathesis over the OpenAPI schemas of the box's web server and of the hub (issue 24):
every operation, with parameters and bodies drawn from its schema (and values that break
it), sent over real HTTP to a running server. The box is asked as a biomed with a bearer
token (no CSRF), so requests reach the handlers behind the sign-in; the hub as an
anonymous device. No answer may be a server error.

Neither server publishes its schema (``openapi_url=None``); the test takes it from the app.
The number of examples per operation follows the Hypothesis profile (tests/property/
conftest.py): a bounded, derandomised set in CI, many more under ``scripts/prove --long``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.web import accounts
from appliance.web.app import create_app
from scripts.harness import free_port
from tests.helpers.boxes import serve
from training.hub.app import create_app as create_hub_app
from training.hub.repository import Repository
from training.hub.store import HubDatabase

#: Examples per operation: a tenth of the profile's (150 in CI: 15 each, about 550 requests in all).
SHARE = 10

#: Operations left out, and why.
LEFT_OUT = {
    "POST /admin/dicom/echo": "opens an association to whatever host the body names",
}
#: Answers of 500 or more that an operation gives by design.
MEANT = {"GET /readyz": {503}}  # not ready: no listener runs beside this web server


def sender(operation, base_url: str, headers: dict[str, str], examples: int, failures: list[str]) -> Callable[[], None]:
    """A Hypothesis test of one operation that records each answer of 500 or more."""

    @settings(max_examples=examples, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def send(case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=60, allow_redirects=False)
        if response.status_code >= 500 and response.status_code not in MEANT.get(operation.label, ()):
            failures.append(f"{operation.label}: {response.status_code}\n{case.as_curl_command()}")

    return send


def no_server_errors(schema_dict: dict, base_url: str, headers: dict[str, str]) -> list[str]:
    """Draw cases for every operation and send them; the operations and the curl command of
    each answer of 500 or more."""
    schema = schemathesis.openapi.from_dict(schema_dict)
    examples = max(3, settings().max_examples // SHARE)
    failures: list[str] = []
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in LEFT_OUT:
            continue
        ran.append(operation.label)
        sender(operation, base_url, headers, examples, failures)()
    assert ran, "the schema lists no operation"
    return failures


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Callable[[], tuple[dict, str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("schema-box") / "data"
    settings_ = load_settings(environ={"APPLIANCE_DATA_DIR": str(data), "APPLIANCE_WEB_PORT": str(free_port())})
    token = accounts.create_token(open_database(settings_.db_path).conn, "biomed", "schemathesis", "test")
    app = create_app(Parts(settings_))
    server, thread, url = serve(app, free_port(), log_level="critical")
    yield app.openapi(), url, {"Authorization": f"Bearer {token}"}
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema-hub")
    app = create_hub_app(HubDatabase(str(root / "hub.db")), Repository(root))
    server, thread, url = serve(app, free_port(), log_level="critical")
    yield app.openapi(), url, {}
    server.should_exit = True
    thread.join(timeout=30)


def test_no_operation_of_the_box_answers_a_server_error(box):
    schema, url, headers = box
    assert len(schema["paths"]) >= 30
    failures = no_server_errors(schema, url, headers)
    assert not failures, "\n\n".join(failures)


def test_no_operation_of_the_hub_answers_a_server_error(hub):
    schema, url, headers = hub
    failures = no_server_errors(schema, url, headers)
    assert not failures, "\n\n".join(failures)

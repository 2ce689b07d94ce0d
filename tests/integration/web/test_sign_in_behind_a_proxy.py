"""Sign-in throttling as a browser meets it, through the real web server
(``appliance.web.server.build_server``) on a free loopback port (hostile cases W2, W4).

Behind the documented reverse proxy on the same host every client reaches the appliance
from 127.0.0.1: ``[web] trusted_proxies`` lets that proxy's X-Forwarded-For name the client.
And a browser that signed in as a user before holds a device cookie: guesses at that user,
or from its address, do not lock it out.
"""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.web import accounts
from appliance.web.server import build_server
from scripts.harness import free_port, wait_until

PASSWORD = "twelve chars or more"


@pytest.fixture
def web(tmp_path):
    """``start(**settings) -> (base url, database)`` with the user ``boss`` (admin)."""
    servers = []

    def start(**settings: str):
        port = free_port()
        environ = {
            "APPLIANCE_DATA_DIR": str(tmp_path / f"data{len(servers)}"),
            "APPLIANCE_WEB_PORT": str(port),
            "APPLIANCE_WEB_BIND_ADDRESS": "127.0.0.1",
            "APPLIANCE_DICOM_PORT": str(free_port()),
            **{f"APPLIANCE_WEB_{k.upper()}": v for k, v in settings.items()},
        }
        parts = Parts(load_settings(environ=environ))
        db = open_database(parts.settings.db_path)
        accounts.add_user(db.conn, "boss", "admin", PASSWORD, "test")
        server = build_server(parts)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), 60, "the web server to start")
        assert server.started
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}", db

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)


def sign_in(client: httpx.Client, password: str, forwarded_for: str | None = None) -> httpx.Response:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    headers = {"Origin": str(client.base_url).rstrip("/")}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return client.post("/login", data={"name": "boss", "password": password, "csrf": csrf}, headers=headers)


def failed_addresses(db) -> list[str]:
    rows = db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'web-login-failed' ORDER BY seq").fetchall()
    return [re.search(r'"address":"([^"]+)"', payload).group(1) for (payload,) in rows]


def test_a_trusted_proxy_names_the_client_and_no_one_else_can(web):
    base, db = web(trusted_proxies="127.0.0.1")
    with httpx.Client(base_url=base, timeout=60) as client:
        assert sign_in(client, "wrong", forwarded_for="203.0.113.7").status_code == 401
    assert failed_addresses(db) == ["203.0.113.7"]
    base, db = web()  # no proxy trusted: the header is the client's word, not taken
    with httpx.Client(base_url=base, timeout=60) as client:
        assert sign_in(client, "wrong", forwarded_for="203.0.113.7").status_code == 401
    assert failed_addresses(db) == ["127.0.0.1"]


def test_guesses_at_a_user_do_not_lock_them_out_of_the_browser_they_signed_in_from(web):
    """Before: five wrong passwords for ``boss`` from anywhere answered 429 to boss's own
    browser for the whole lockout window (W2); behind the proxy, twenty failures from any
    names locked every client out (W4)."""
    base, _ = web(trusted_proxies="127.0.0.1")
    with httpx.Client(base_url=base, timeout=60) as browser:
        assert sign_in(browser, PASSWORD).status_code == 303
        assert browser.cookies.get("appliance_device")
        with httpx.Client(base_url=base, timeout=60) as attacker:
            for n in range(5):
                assert sign_in(attacker, "guess", forwarded_for=f"198.51.100.{n}").status_code == 401
            assert sign_in(attacker, PASSWORD, forwarded_for="198.51.100.9").status_code == 429  # no cookie: locked
        browser.cookies.delete("appliance_session")
        assert sign_in(browser, PASSWORD).status_code == 303

"""Hostile requests to the web app under uvicorn on a real socket: session fixation, login
CSRF, open redirects, header injection, reflected markup, traversal, TLS cookie flags,
user enumeration, framing, and address-based lockouts."""

from __future__ import annotations

import re
from contextlib import closing
import subprocess

import httpx
import pytest

from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.web import accounts
from appliance.web.app import create_app
from scripts.harness import free_port
from tests.helpers.boxes import PASSWORD, serve, session_client
from tests.helpers.hostile import case

EVIL = "http://evil.example"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def login_token(client: httpx.Client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def sign_in(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/login", data={"name": name, "password": password, "csrf": login_token(client)})


def anonymous(web, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=web.url, timeout=60, headers={"Origin": web.url}, **kwargs)


@case("W5-fixation")
def test_a_planted_session_id_is_useless(web, case_id):
    planted = "planted-session-id-0123456789abcdef"
    with anonymous(web) as client:
        client.cookies.set("appliance_session", planted)
        refused = client.get("/worklist")
        assert refused.status_code == 303 and refused.headers["location"].endswith("/login")
        answer = sign_in(client, "rad")
        assert answer.status_code == 303
        issued = re.search(r"appliance_session=([^;]+)", answer.headers["set-cookie"]).group(1)
        assert issued != planted and len(issued) >= 32
    with anonymous(web) as other:
        other.cookies.set("appliance_session", planted)
        assert other.get("/worklist").status_code == 303


@case("W8-login-csrf")
def test_a_sign_in_without_its_csrf_cookie_or_from_elsewhere_is_refused(web, case_id):
    with anonymous(web) as client:
        token = login_token(client)
        client.cookies.clear()  # the login CSRF cookie gone, the form's token kept
        answer = client.post("/login", data={"name": "rad", "password": PASSWORD, "csrf": token})
        assert answer.status_code == 403 and "appliance_session" not in answer.headers.get("set-cookie", "")
    with anonymous(web) as client:
        token = login_token(client)
        answer = client.post("/login", data={"name": "rad", "password": PASSWORD, "csrf": token},
                             headers={"Origin": EVIL})
        assert answer.status_code == 403 and "appliance_session" not in answer.headers.get("set-cookie", "")


@case("W10-open-redirect")
def test_sign_in_never_redirects_off_site(web, case_id):
    with anonymous(web) as client:
        for target in (EVIL, "//evil.example", "/\\evil.example", "https:evil.example"):
            token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login", params={"next": target}).text)
            answer = client.post("/login", params={"next": target},
                                 data={"name": "rad", "password": PASSWORD, "csrf": token.group(1)})
            assert answer.status_code == 303 and answer.headers["location"] == "/", (target, answer.headers)
            client.cookies.clear()


@case("W11-header-inject")
def test_crlf_never_reaches_a_response_header(web, case_id):
    client, _ = session_client(web, "boss")
    with closing(client):
        answer = client.get("/admin/audit/export", params={"format": "csv\r\nX-Injected: yes"})
        assert answer.status_code == 400 and "x-injected" not in answer.headers
        answer = client.get("/admin/audit/export", params={"format": "json", "kind": "x\r\nX-Injected: yes"})
        assert "x-injected" not in answer.headers
        assert all("\n" not in value and "\r" not in value for value in answer.headers.values())


@case("W12-reflected")
def test_markup_in_query_parameters_is_escaped(web, case_id):
    boss, _ = session_client(web, "boss")
    bio, _ = session_client(web, "bio")
    with closing(boss), closing(bio):
        for client, path in ((boss, "/admin/users"), (bio, "/admin"), (bio, "/admin/models"), (bio, "/admin/dicom"),
                             (bio, "/admin/audit"), (boss, "/admin/sessions/end")):
            for name in ("done", "token", "error", "kind", "q"):
                for payload in (SCRIPT, IMG):
                    page = client.get(path, params={name: payload})
                    assert payload not in page.text, (path, name, page.status_code)
                    assert "New token (shown once)" not in page.text


TRAVERSALS = [
    "/static/../appliance.db", "/static/..%2f..%2fappliance.db", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/....//....//etc/passwd", "/admin/drift/plots/..%2f..%2fappliance.db/x.png",
    "/admin/drift/plots/x/..%2f..%2f..%2fetc%2fpasswd", "/studies/..%2f..%2fappliance.db",
    "/studies/1.2.3/capture/..%2f..%2fappliance.db.png", "/studies/1.2.3/capture/%2e%2e%2f%2e%2e%2fetc%2fpasswd.png",
    "/static/%252e%252e/%252e%252e/etc/passwd", "//etc/passwd",
]


@case("W13-traversal")
def test_traversal_paths_find_nothing_outside_their_folders(web, case_id):
    client, _ = session_client(web, "bio")
    with closing(client):
        for path in TRAVERSALS:
            answer = client.get(path)
            assert answer.status_code in (303, 400, 403, 404, 422), (path, answer.status_code)
            assert b"SQLite format 3" not in answer.content and b"root:x:0:0" not in answer.content, path


@case("W21-user-enum")
def test_a_wrong_password_reads_the_same_for_real_and_unknown_users(web, case_id):
    """Same status and the same words; response times are a benchmark's business."""
    answers = []
    for name in ("boss", "no-such-user"):
        with anonymous(web) as client:
            answer = sign_in(client, name, "wrong password 12345")
            message = re.search(r'role="alert"[^>]*>(.*?)<', answer.text, re.S)
            answers.append((answer.status_code, message.group(1).strip() if message else answer.text))
    assert answers[0] == answers[1] and answers[0][0] == 401


@case("W22-framing-csp")
def test_every_page_forbids_framing_and_sniffing(web, case_id):
    client, _ = session_client(web, "bio")
    with closing(client):
        for path in ("/login", "/healthz", "/readyz", "/admin", "/admin/dicom", "/static/app.css", "/no-such-page"):
            headers = client.get(path).headers
            csp = headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp, path
            assert headers.get("x-frame-options") == "DENY" and headers.get("x-content-type-options") == "nosniff"


@pytest.fixture(scope="module")
def tls_web(tmp_path_factory):
    """The web app over HTTPS with a self-signed certificate ([web.tls])."""
    root = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
                   check=True, capture_output=True, timeout=120)
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(root / "data"), "APPLIANCE_WEB_PORT": str(free_port()),
        "APPLIANCE_WEB_TLS_CERTIFICATE": str(root / "cert.pem"), "APPLIANCE_WEB_TLS_PRIVATE_KEY": str(root / "key.pem"),
    })
    accounts.add_user(open_database(settings.db_path).conn, "rad", "radiologist", PASSWORD, "test")
    server, thread, url = serve(create_app(Parts(settings)), settings.web.port, ssl_certfile=str(root / "cert.pem"),
                                ssl_keyfile=str(root / "key.pem"))
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@case("W19-tls-cookie")
def test_over_tls_the_cookie_is_secure_and_hsts_is_sent(tls_web, case_id):
    with httpx.Client(base_url=tls_web, verify=False, timeout=60, headers={"Origin": tls_web}) as client:
        form = client.get("/login")
        assert "max-age=" in form.headers["strict-transport-security"]
        assert "Secure" in form.headers["set-cookie"]
        answer = sign_in(client, "rad")
        cookie = answer.headers["set-cookie"]
        assert answer.status_code == 303 and "appliance_session=" in cookie
        assert all(flag in cookie.lower() for flag in ("secure", "httponly", "samesite=strict"))

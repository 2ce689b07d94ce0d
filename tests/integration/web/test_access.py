"""Access rules against the real server: roles on every route, CSRF and Origin, tokens,
sessions, capped uploads, health and metrics."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from appliance.web.app import route_table
from scripts.harness import REPO
from tests.helpers.boxes import PASSWORD, session_client

DUMMY = {"study_uid": "1.2.3", "sop_uid": "1.2.3.4", "name": "rad", "action": "disable", "token_id": "999",
         "kind": "peers", "item_id": "999", "key": "0123456789abcdef"}


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: DUMMY[m.group(1)], path)


def _refusals(box) -> int:
    return box.db().conn.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'web-refused'").fetchone()[0]


def _cli(box, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {"APPLIANCE_DATA_DIR": str(box.settings.data_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], input=stdin, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tokens(box):
    made = {}
    for role in ("radiologist", "biomed"):
        result = _cli(box, "tokens", "create", "--role", role, "--name", f"test-{role}")
        assert result.returncode == 0, result.stderr
        made[role] = result.stdout.strip().splitlines()[-1]
    return made


def test_every_route_belongs_to_one_access_area(box):
    table = route_table(box.app)
    assert len(table) > 20
    assert {area for _, _, area in table} == {"public", "signed-in", "clinical", "operations", "accounts"}
    public = {path for path, _, area in table if area == "public"}
    assert public == {"/login", "/healthz", "/readyz"}


def test_anonymous_requests_are_sent_to_sign_in_or_refused(box):
    with httpx.Client(base_url=box.url, timeout=60) as client:
        for path, methods, area in route_table(box.app):
            if area == "public":
                continue
            for method in methods:
                answer = client.request(method, _concrete(path))
                if path.startswith(("/api/", "/metrics")):
                    assert answer.status_code == 401, (method, path)
                else:
                    assert answer.status_code == 303 and answer.headers["location"] == "/login", (method, path)


def test_a_radiologist_gets_403_on_every_admin_route_and_api_call(box, tokens):
    client, csrf = session_client(box, "rad")
    bearer = httpx.Client(base_url=box.url, timeout=60, headers={"Authorization": f"Bearer {tokens['radiologist']}"})
    admin_routes = [(p, m) for p, methods, area in route_table(box.app) if area in ("operations", "accounts")
                    for m in methods]
    assert any(p.startswith("/api/") for p, _ in admin_routes) and any(p == "/admin" for p, _ in admin_routes)
    before = _refusals(box)
    for path, method in admin_routes:
        data = {"csrf": csrf} if method == "POST" else None
        assert client.request(method, _concrete(path), data=data).status_code == 403, (method, path)
        assert bearer.request(method, _concrete(path)).status_code == 403, (method, path)
    assert _refusals(box) == before + 2 * len(admin_routes)
    # ...while the clinical pages and API are theirs.
    assert client.get("/worklist").status_code == 200
    assert bearer.get("/api/studies").status_code == 200


def test_a_biomed_user_may_run_the_box_but_not_manage_users(box):
    client, _ = session_client(box, "bio")
    for path in ("/admin", "/admin/models", "/admin/dicom", "/admin/audit", "/metrics", "/api/models"):
        assert client.get(path).status_code == 200, path
    assert client.get("/admin/users").status_code == 403
    assert client.get("/worklist").status_code == 403  # no patient data for the box's operators


def test_posts_without_the_csrf_token_or_from_another_origin_are_refused(box):
    client, csrf = session_client(box, "rad")
    study, series = box.studies["flagged"], box.series["flagged"]
    form = {"series_uid": series, "verdict": "agree", "csrf": csrf}
    count = lambda: box.db().conn.execute("SELECT COUNT(*) FROM web_feedback").fetchone()[0]  # noqa: E731
    before, refusals = count(), _refusals(box)
    without = {k: v for k, v in form.items() if k != "csrf"}
    assert client.post(f"/studies/{study}/feedback", data=without).status_code == 403
    assert client.post(f"/studies/{study}/feedback", data={**form, "csrf": "forged"}).status_code == 403
    assert client.post(f"/studies/{study}/feedback", data=form,
                       headers={"Origin": "http://evil.example"}).status_code == 403
    no_origin = httpx.Client(base_url=box.url, timeout=60, cookies=client.cookies)
    assert no_origin.post(f"/studies/{study}/feedback", data=form).status_code == 403
    assert count() == before and _refusals(box) == refusals + 4
    assert client.post(f"/studies/{study}/feedback", data=form).status_code == 303
    assert count() == before + 1
    # The sign-in form has its own token and the same Origin rule.
    stranger = httpx.Client(base_url=box.url, timeout=60, headers={"Origin": "http://evil.example"})
    stranger.get("/login")
    answer = stranger.post("/login", data={"name": "rad", "password": PASSWORD, "csrf": "x"})
    assert answer.status_code == 403 and "appliance_session" not in answer.cookies


def test_security_headers_and_cookie_flags(box):
    with httpx.Client(base_url=box.url, timeout=60, headers={"Origin": box.url}) as client:
        page = client.get("/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'self'" in csp and "unsafe" not in csp
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        answer = client.post("/login", data={"name": "rad", "password": PASSWORD, "csrf": token})
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain HTTP here; [web.tls] turns it on


def test_signing_out_and_disabling_end_sessions_and_are_audited(box):
    client, csrf = session_client(box, "rad")
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/worklist").status_code == 303
    boss, boss_csrf = session_client(box, "boss")
    victim, _ = session_client(box, "bio")
    assert boss.post("/admin/users/bio/disable", data={"csrf": boss_csrf}).status_code == 303
    assert victim.get("/admin").status_code == 303
    assert boss.post("/admin/users/bio/enable", data={"csrf": boss_csrf}).status_code == 303
    kinds = [k for (k,) in box.db().conn.execute("SELECT kind FROM audit_log WHERE kind LIKE 'web-%'")]
    assert {"web-login", "web-logout", "web-user-disabled", "web-user-enabled"} <= set(kinds)


def test_wrong_passwords_are_throttled_per_user(box):
    with httpx.Client(base_url=box.url, timeout=60, headers={"Origin": box.url}) as client:
        statuses = []
        for _ in range(box.settings.web.login_failures_per_user + 1):
            token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
            statuses.append(client.post("/login", data={"name": "nobody", "password": "wrong-password-1",
                                                        "csrf": token}).status_code)
        assert statuses[:-1] == [401] * box.settings.web.login_failures_per_user and statuses[-1] == 429


def test_a_chunked_upload_past_the_cap_is_cut_and_nothing_stays(box, tokens):
    cap = box.settings.web.max_upload_mb * 1024 * 1024
    models_before = box.db().conn.execute("SELECT COUNT(*) FROM models").fetchone()[0]
    requests = []

    def body():
        for _ in range(5 * cap // 65536):
            yield b"\0" * 65536

    uploads = box.settings.data_dir / "uploads"
    with httpx.Client(base_url=box.url, timeout=60, headers={"Authorization": f"Bearer {tokens['biomed']}"},
                      event_hooks={"request": [requests.append]}) as client:
        try:
            answer = client.post("/api/models", content=body(), headers={"Content-Type": "application/octet-stream"})
            assert answer.status_code == 413 and "limit" in answer.json()["error"]
        except httpx.HTTPError:
            pass  # the server may close the connection while the client is still sending
    sent = requests[0].headers
    assert sent.get("transfer-encoding") == "chunked" and "content-length" not in sent
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert box.db().conn.execute("SELECT COUNT(*) FROM models").fetchone()[0] == models_before
    # Unauthenticated: refused before any byte of the body is read or stored.
    answer = httpx.post(f"{box.url}/api/models", content=b"x" * 1000, timeout=60)
    assert answer.status_code == 401 and (not uploads.exists() or list(uploads.iterdir()) == [])


def test_the_api_lists_studies_for_a_token_flagged_first(box, tokens):
    with httpx.Client(base_url=box.url, timeout=60, headers={"Authorization": f"Bearer {tokens['radiologist']}"}) as c:
        listing = c.get("/api/studies").json()
        assert listing["studies"][0]["study_instance_uid"] == box.studies["flagged"]
        assert listing["studies"][0]["state"] == "flagged"
        states = {s["study_instance_uid"]: s for s in listing["studies"]}
        assert states[box.studies["not-analysed"]]["state"] == "not-analysed"
        assert "modality MR" in states[box.studies["not-analysed"]]["reason"]
        one = c.get(f"/api/studies/{box.studies['flagged']}").json()
        assert one["series"][0]["model_version"] == "1.0.0" and one["series"][0]["state"] == "triaged"
        assert c.get("/api/studies?state=failed").json()["total"] == 1
        assert c.get("/api/studies?state=bogus").status_code == 400
    stored = box.db().conn.execute("SELECT token_sha256 FROM web_tokens").fetchall()
    assert all(tokens["radiologist"] not in row[0] for row in stored)


def test_health_readiness_and_metrics(box, tokens):
    assert httpx.get(f"{box.url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{box.url}/readyz")
    assert ready.status_code == 503  # no listener runs in this test
    checks = ready.json()["checks"]
    assert checks["database"] == "ok" and checks["model"] == "ok" and "not accepting" in checks["listener"]
    metrics = httpx.get(f"{box.url}/metrics", headers={"Authorization": f"Bearer {tokens['biomed']}"}).text
    assert 'appliance_series{state="triaged"} 2.0' in metrics
    assert 'appliance_series{state="failed"} 1.0' in metrics
    assert "appliance_inference_seconds_bucket" in metrics and "appliance_instances_received_total" in metrics
    # what the worker queued for PACS (results, and "not analysed" notices since main's results merge)
    pending = box.db().conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
    assert pending >= 4 and f'appliance_outbox{{destination="PACS@127.0.0.1:9",state="pending"}} {pending}.0' in metrics
    verify = httpx.get(f"{box.url}/api/audit/verify", headers={"Authorization": f"Bearer {tokens['biomed']}"})
    assert verify.json()["intact"] is True


def test_the_first_user_comes_from_the_cli_with_the_password_on_stdin(box):
    result = _cli(box, "users", "add", "newcomer", "--role", "radiologist", stdin="a long enough secret\n")
    assert result.returncode == 0 and "added radiologist newcomer" in result.stdout
    short = _cli(box, "users", "add", "shorty", "--role", "radiologist", stdin="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    stored = box.db().conn.execute("SELECT password_hash FROM web_users WHERE name = 'newcomer'").fetchone()[0]
    assert stored.startswith("$argon2id$")

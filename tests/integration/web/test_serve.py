"""``appliance serve`` runs the web server beside the listener and worker."""

from __future__ import annotations

import time

import httpx

from scripts.harness import ApplianceProcess, free_port


def test_serve_answers_http_beside_the_dicom_listener(tmp_path):
    web_port = free_port()
    box = ApplianceProcess(tmp_path / "data", web_port=str(web_port), web_bind_address="127.0.0.1")
    box.command = "serve"
    box.start(timeout=120)
    try:
        deadline, ready = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{web_port}/readyz", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None
        checks = ready.json()["checks"]
        assert checks["listener"] == "ok" and checks["database"] == "ok"
        assert checks["model"] == "no model is active" and ready.status_code == 503
        login = httpx.get(f"http://127.0.0.1:{web_port}/worklist", timeout=10, follow_redirects=True)
        assert login.url.path == "/login" and "appliance users add" in login.text
    finally:
        box.stop()
    assert box.process.returncode == 0
    log = box.log.read_text()  # issue 26: the shutdown is in the log, as the start is
    assert "serve: SIGTERM received; stopping the web server, the worker and the listener" in log
    assert log.rstrip().endswith("serve: stopped")

"""``scripts/run-hub`` prints how to connect the demo appliance (issue 26): the ``appliance
sync`` it prints must carry the trusted key the demo packages are signed with, as README's
does, or the first round refuses every release."""

from __future__ import annotations

import os
import re
import subprocess

import httpx

from appliance.models.package import verify_package
from scripts.harness import REPO, free_port, wait_until


def printed_by_run_hub(tmp_path) -> tuple[str, int]:
    """What ``scripts/run-hub`` printed before it served, and its port; the hub is stopped."""
    port, out = free_port(), tmp_path / "run-hub.out"
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path / "hub"), "HUB_PORT": str(port)}
    env.pop("HUB_DATABASE_URL", None)
    with open(out, "wb") as sink:
        hub = subprocess.Popen([str(REPO / "scripts" / "run-hub")], cwd=REPO, env=env, stdout=sink,
                               stderr=subprocess.STDOUT)  # the script execs the hub: one process
    try:
        def up() -> bool:
            assert hub.poll() is None, out.read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=180, what="scripts/run-hub's hub")
    finally:
        hub.terminate()
        hub.wait(timeout=30)
    return out.read_text(), port


def test_the_printed_sync_carries_the_key_the_demo_packages_are_signed_with(tmp_path):
    text, port = printed_by_run_hub(tmp_path)
    commands = [line.strip() for line in text.splitlines() if line.startswith("    .venv") or " .venv/bin/" in line]
    assert re.fullmatch(rf"\.venv/bin/appliance sync enrol --hub http://127\.0\.0\.1:{port} --token \S+", commands[0])
    sync = commands[1]
    assert sync == "APPLIANCE_MODELS_TRUSTED_KEYS=firmware-config/models/demo-signing.pub .venv/bin/appliance sync"
    assert sync in (REPO / "README.md").read_text().splitlines()
    key = REPO / sync.split()[0].split("=", 1)[1]
    for package in sorted((REPO / "firmware-config" / "models").glob("*.tar")):
        assert verify_package(package, [key]).signing_key_id  # the hub publishes these: the key must be theirs
    assert commands[2] == ".venv/bin/appliance sync status"

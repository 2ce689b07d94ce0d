"""``scripts/provision --prefix`` (issue 23): the user, a private data folder, the
settings readable by the service's group only, the code under /opt and the units; run
twice, it changes nothing and keeps edited settings."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from scripts.harness import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("systemd-sysusers") is None,
    reason="files owned by another user need root, and systemd-sysusers",
)


def provision(prefix) -> str:
    done = subprocess.run([str(REPO / "scripts" / "provision"), "--prefix", str(prefix), "--skip-venv"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_provision_into_a_prefix_twice(tmp_path):
    prefix = tmp_path / "root"
    assert "users add admin --role admin" in provision(prefix)
    user = next(line.split(":") for line in (prefix / "etc/passwd").read_text().splitlines()
                if line.startswith("appliance:"))
    uid, gid = int(user[2]), int(user[3])
    data = (prefix / "var/lib/appliance").stat()
    assert (data.st_uid, data.st_mode & 0o777) == (uid, 0o700)
    config = prefix / "etc/appliance/appliance.toml"
    info = config.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, gid, 0o640)
    assert 'routing_file = "/opt/appliance/firmware-config/routing.toml"' in config.read_text()
    assert (prefix / "opt/appliance/firmware-config/routing.toml").is_file()
    assert (prefix / "opt/appliance/appliance/__init__.py").is_file()
    assert {p.name for p in (prefix / "etc/systemd/system").iterdir()} >= {
        "appliance.service", "appliance-worker.service", "appliance.target"}

    config.write_text(config.read_text() + "\n# edited on site\n")
    provision(prefix)
    assert config.read_text().endswith("# edited on site\n")
    lines = (prefix / "etc/passwd").read_text().splitlines()
    assert sum(line.startswith("appliance:") for line in lines) == 1

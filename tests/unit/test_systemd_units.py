"""The shipped systemd units (issue 23): a worker unit exists, every long-running unit
is ``Type=notify`` with a watchdog where the component pings, hardened to an exposure of
at most 2.0 (``systemd-analyze security --offline=true``), valid for ``systemd-analyze
verify``, and the service user and folders they name are the ones sysusers.d and
tmpfiles.d create."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import WorkerSettings

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
#: The long-running services that speak sd_notify, and the command each runs.
NOTIFYING = {
    "appliance.service": "serve",
    "appliance-listener.service": "listener",
    "appliance-worker.service": "worker",
}
DATA_DIR = "/var/lib/appliance"
MAX_EXPOSURE = 2.0
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


def settings_of(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value given (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def unit(name: str) -> dict[str, list[str]]:
    return settings_of((UNITS / name).read_text())


def test_the_units_the_docs_name_exist():
    assert {"appliance.service", "appliance-worker.service", "appliance-listener.service",
            "appliance-web.service", "appliance-sync.service"} <= set(SERVICES)
    target = unit("appliance.target")
    wanted = " ".join(target["Unit.Wants"]).split()
    assert {"appliance-listener.service", "appliance-worker.service", "appliance-web.service"} <= set(wanted)
    # All in one, or the separate services: never both on the same ports.
    assert "appliance.target" in unit("appliance.service")["Unit.Conflicts"][0].split()


@pytest.mark.parametrize("name", sorted(NOTIFYING))
def test_long_running_units_notify_and_restart(name):
    service = unit(name)
    assert service["Service.Type"] == ["notify"]
    assert service["Service.NotifyAccess"] == ["main"]
    assert service["Service.Restart"] == ["always"]
    assert service["Service.ExecStart"][0].split()[-1] == NOTIFYING[name]
    assert "time-sync.target" in service["Unit.After"][0].split()
    assert float(service["Service.WatchdogSec"][0]) > 0


def test_the_worker_watchdog_outlasts_one_series():
    """The worker pings between series: one series may take ``series_timeout_s``."""
    watchdog = float(unit("appliance-worker.service")["Service.WatchdogSec"][0])
    assert watchdog > WorkerSettings().series_timeout_s


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_hardened(name):
    service = unit(name)
    assert service["Service.User"] == ["appliance"]
    assert service["Service.UMask"] == ["0077"]
    assert service["Service.ProtectSystem"] == ["strict"]
    assert service["Service.ReadWritePaths"] == [DATA_DIR]
    assert service["Service.CapabilityBoundingSet"] == [""]
    assert service["Service.NoNewPrivileges"] == ["yes"]
    assert "@system-service" in service["Service.SystemCallFilter"]
    env = dict(e.split("=", 1) for e in service["Service.Environment"])
    assert env["APPLIANCE_DATA_DIR"] == DATA_DIR


def test_only_the_listener_denies_writable_executable_memory():
    """The inference backends JIT-compile their kernels (worker, serve, web and sync
    golden-test models); the listener never runs a model."""
    deny = {name for name in SERVICES if unit(name).get("Service.MemoryDenyWriteExecute") == ["yes"]}
    assert deny == {"appliance-listener.service"}


@pytest.fixture
def installed_units(tmp_path) -> Path:
    """The units as installed, with ExecStart pointing at an executable that exists here
    (verify checks it)."""
    for path in UNITS.iterdir():
        if path.is_file():
            text = path.read_text().replace("/opt/appliance/.venv/bin/appliance", sys.executable)
            (tmp_path / path.name).write_text(text)
    return tmp_path


@needs_systemd_analyze
def test_systemd_analyze_verify_is_silent(installed_units):
    names = [str(p) for p in sorted(installed_units.iterdir()) if p.suffix in (".service", ".timer", ".target")]
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_exposure_is_at_most_two(name, installed_units):
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(installed_units / name)],
                          capture_output=True, text=True, timeout=120)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level, done.stdout + done.stderr
    assert float(level.group(1)) <= MAX_EXPOSURE, done.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-tmpfiles") is None,
                    reason="creating folders owned by another user needs root and systemd-tmpfiles")
def test_sysusers_and_tmpfiles_make_the_user_and_a_private_data_folder(tmp_path):
    (tmp_path / "etc").mkdir()
    for tool, conf in (("systemd-sysusers", "sysusers.d"), ("systemd-tmpfiles", "tmpfiles.d")):
        extra = ["--create"] if tool == "systemd-tmpfiles" else []
        subprocess.run([tool, f"--root={tmp_path}", *extra, "-"], input=(UNITS / conf / "appliance.conf").read_bytes(),
                       check=True, capture_output=True, timeout=60)
    user = next(line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
                if line.startswith("appliance:"))
    data = (tmp_path / DATA_DIR.lstrip("/")).stat()
    assert (data.st_uid, data.st_mode & 0o777) == (int(user[2]), 0o700)
    config = (tmp_path / "etc/appliance").stat()
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, int(user[3]), 0o750)

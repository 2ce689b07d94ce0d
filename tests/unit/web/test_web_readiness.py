"""Disk floor and build in the operations endpoints (issue 23): ``/readyz`` answers 503
with the reason when free space in the data folder is below ``dicom.min_free_disk_mb``;
``/metrics`` exposes the free space, the floor and the running version, which is also what
``appliance --version`` prints."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.exposition import generate_latest

from appliance import __version__
from appliance.cli import main
from appliance.config import load_settings
from appliance.disk import below_floor, free_bytes
from appliance.parts import Parts
from appliance.web.app import create_app
from appliance.web.metrics import HostCollector

#: A floor no test machine reaches (1 PiB), and none at all.
UNREACHABLE_MB, NO_FLOOR_MB = 1 << 30, 0


def settings_with_floor(tmp_path, floor_mb: int):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return load_settings(environ={"APPLIANCE_DATA_DIR": str(data), "APPLIANCE_DICOM_MIN_FREE_DISK_MB": str(floor_mb)})


def test_readyz_is_503_with_the_reason_below_the_disk_floor(tmp_path):
    settings = settings_with_floor(tmp_path, UNREACHABLE_MB)
    with TestClient(create_app(Parts(settings)), base_url="http://127.0.0.1") as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    reason = ready.json()["checks"]["disk"]
    assert "below the floor (dicom.min_free_disk_mb = 1073741824)" in reason and str(settings.data_dir) in reason


def test_the_disk_check_passes_above_the_floor(tmp_path):
    settings = settings_with_floor(tmp_path, NO_FLOOR_MB)
    assert below_floor(settings.data_dir, settings.dicom.min_free_disk_bytes) is None


def test_metrics_expose_the_build_the_free_space_and_the_floor(tmp_path):
    settings = settings_with_floor(tmp_path, 16)
    text = generate_latest(_Registry(HostCollector(settings))).decode()
    assert f'appliance_build_info{{version="{__version__}"}} 1.0' in text
    values = {name: float(value) for name, value in (line.split() for line in text.splitlines()
                                                      if line.startswith("appliance_disk_"))}
    assert values["appliance_disk_floor_bytes"] == 16 << 20
    assert abs(values["appliance_disk_free_bytes"] - free_bytes(settings.data_dir)) < 1 << 30  # others write meanwhile


def test_the_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"appliance {__version__}"
    assert __version__ == "0.3.0"


class _Registry:
    """One collector as prometheus-client's exposition expects a registry."""

    def __init__(self, collector):
        self.collector = collector

    def collect(self):
        return self.collector.collect()

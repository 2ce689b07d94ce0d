"""Hostile settings files: each bad value is refused with its key named, by the loader and
by `appliance config validate`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.config import load_settings
from appliance.errors import ConfigError
from scripts.harness import REPO
from tests.helpers.hostile import case

BAD = {
    "port-true": ("[dicom]\nport = true\n", "dicom.port"),
    "port-0": ("[dicom]\nport = 0\n", "dicom.port"),
    "port-70000": ("[dicom]\nport = 70000\n", "dicom.port"),
    "peer-AE@@": ('[dicom]\npeers = ["AE@@"]\n', "is not an IP address"),
    "peer-no-ae": ('[dicom]\npeers = ["@1.2.3.4"]\n', "dicom.peers"),
    "empty-ae-title": ('[dicom]\nae_title = ""\n', "dicom.ae_title"),
    "backslash-ae-title": ('[dicom]\nae_title = "A\\\\B"\n', "dicom.ae_title"),
    "destination-no-port": ('[dicom]\ndestinations = ["PACS@host"]\n', "is not AE@host:port"),
    "destination-port-0": ('[dicom]\ndestinations = ["PACS@host:0"]\n', "dicom.destinations"),
    "destination-no-ae": ('[dicom]\ndestinations = ["@host:104"]\n', "dicom.destinations"),
}


@case("P1-L11-config")
def test_bad_dicom_settings_are_refused_naming_the_key(tmp_path, case_id):
    path = tmp_path / "appliance.toml"
    for name, (toml, words) in BAD.items():
        path.write_text(toml)
        with pytest.raises(ConfigError) as refused:
            load_settings(path, environ={})
        assert words in str(refused.value), (name, str(refused.value))
    path.write_text(BAD["port-true"][0])
    cli = subprocess.run([sys.executable, "-m", "appliance.cli", "config", "validate", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert cli.returncode == 2 and "dicom.port" in cli.stderr and "Traceback" not in cli.stderr

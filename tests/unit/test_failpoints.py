"""appliance.failpoints: inert unless APPLIANCE_FAILPOINT names the point, and then a real
SIGKILL; the variable is let through by the settings without becoming a setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from appliance.config import Settings, load_settings
from appliance.errors import ConfigError
from scripts.harness import REPO

HIT = "from appliance import failpoints; failpoints.hit('mid-send'); print('went on')"


@pytest.mark.parametrize(("armed", "returncode", "out"), [
    (None, 0, "went on\n"), ("mid-sync", 0, "went on\n"), ("mid-send", -9, "")])
def test_only_the_named_point_kills_the_process(armed, returncode, out):
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_FAILPOINT"}
    if armed:
        env["APPLIANCE_FAILPOINT"] = armed
    done = subprocess.run([sys.executable, "-c", HIT], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (returncode, out)


def test_the_variable_is_no_setting_and_other_unknown_variables_are_still_refused(tmp_path):
    environ = {"APPLIANCE_DATA_DIR": str(tmp_path), "APPLIANCE_FAILPOINT": "mid-send"}
    assert load_settings(environ=environ).data_dir == tmp_path
    assert "failpoint" not in Settings.model_fields
    with pytest.raises(ConfigError, match="APPLIANCE_FAILPOINTS: no such setting"):
        load_settings(environ={**environ, "APPLIANCE_FAILPOINTS": "mid-send"})

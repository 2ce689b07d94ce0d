"""What the appliance writes is closed to other users whatever umask started it, and a
TLS private key others can read is refused at start with what to do (issue 23)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from appliance.config import TlsSettings, check_private_key, load_settings
from appliance.errors import ConfigError
from appliance.parts import Parts
from appliance.receive.listener import tls_context
from appliance.web.server import build_server
from scripts.harness import REPO


def test_files_and_folders_are_closed_to_others_under_an_open_umask(tmp_path):
    data = tmp_path / "data"
    script = "import os, sys; os.umask(0); from appliance.cli import main; sys.exit(main(['backup']))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "APPLIANCE_DATA_DIR": str(data)},
    )
    assert done.returncode == 0, done.stderr
    made = [data, *data.rglob("*")]
    assert len(made) >= 5  # the folder, the database and its WAL files, the identity, the backups
    for path in made:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o027 == 0, f"{path} is {mode:04o}"


def test_a_tls_key_others_can_read_is_refused_with_what_to_do(tmp_path):
    key = tmp_path / "server.key"
    key.write_text("not even a key")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"dicom.tls.private_key .*server.key is open to other users \(mode 0644\)"):
        tls_context(TlsSettings(enabled=True, certificate=tmp_path / "server.pem", private_key=key))
    settings = load_settings(
        environ={
            "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
            "APPLIANCE_WEB_TLS_CERTIFICATE": str(tmp_path / "server.pem"),
            "APPLIANCE_WEB_TLS_PRIVATE_KEY": str(key),
        }
    )
    with pytest.raises(ConfigError, match=r"web.tls.private_key .* chmod 0640"):
        build_server(Parts(settings))
    key.chmod(0o640)  # root:appliance 0640, as docs/install.md says
    check_private_key(key, "dicom.tls.private_key")
    with pytest.raises(ConfigError, match="No such file"):
        check_private_key(tmp_path / "missing.key", "dicom.tls.private_key")

"""Issue 26: commands answer in words: an empty outbox says so, an unknown audit kind is
refused with the kinds there are, ``models verify`` without a key says how to give one,
and a reader that goes away (``| head``) ends a command quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    for name in ("APPLIANCE_CONFIG", "APPLIANCE_MODELS_TRUSTED_KEYS", "APPLIANCE_DICOM_DESTINATIONS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_an_empty_outbox_says_so(environment, capsys):
    assert main(["outbox", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no result objects queued, sent or given up"
    assert main(["outbox", "list", "--dead", "--destination", "PACS@10.0.0.9:104"]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters for PACS@10.0.0.9:104"


def test_an_unknown_audit_kind_is_refused_with_the_kinds_there_are(environment, capsys):
    main(["dicom", "peers", "add", "CT1@10.0.0.5"])  # one audited change
    capsys.readouterr()
    assert main(["audit", "export", "--kind", "bogus"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "no audit row has kind 'bogus'; kinds in the log: dicom-peer-added" in out.err
    assert main(["audit", "export", "--kind", "dicom-peer-added"]) == 0
    assert "exported 1 row\n" in capsys.readouterr().err


def test_models_verify_without_a_key_says_how_to_give_one(environment, capsys):
    package = environment / "some.tar"
    package.write_bytes(b"")
    assert main(["models", "verify", str(package)]) == 2
    err = capsys.readouterr().err
    assert "--trusted-key" in err and "trusted_keys" in err and "APPLIANCE_MODELS_TRUSTED_KEYS" in err


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(environment):
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(environment / "data")}
    child = subprocess.Popen([sys.executable, "-m", "appliance.cli", "config", "show"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # like `| head` that has read its lines, before the command writes
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_version_prints_the_appliance_version(capsys):
    from appliance import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"appliance {__version__}"

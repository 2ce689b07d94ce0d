from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import DEFAULT_CONFIG_PATH, load_settings, read_toml
from appliance.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_embedded_defaults_load_with_the_documented_ports():
    settings = load_settings(environ={})
    assert settings.dicom.port == 11112 and settings.web.port == 8080
    assert settings.dicom.open_mode is False and settings.dicom.peers == ()


def test_every_key_in_the_embedded_toml_is_documented_by_a_comment():
    blocks = DEFAULT_CONFIG_PATH.read_text().split("\n\n")
    for block in blocks:
        lines = [line.strip() for line in block.splitlines()]
        keys = [line for line in lines if "=" in line and not line.startswith("#")]
        if keys:
            assert any(line.startswith("#") for line in lines), f"undocumented: {keys}"


def test_environment_overrides_any_key():
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": "/srv/appliance",
        "APPLIANCE_DICOM_PORT": "104",
        "APPLIANCE_DICOM_AE_TITLE": "ED_TRIAGE",
        "APPLIANCE_WEB_PORT": "8443",
        "APPLIANCE_DICOM_PEERS": "CT1@10.0.0.5, *@127.0.0.1",
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@pacs.local:11112",
        "APPLIANCE_DICOM_TLS_ENABLED": "true",
    })
    assert str(settings.data_dir) == "/srv/appliance"
    assert (settings.dicom.port, settings.dicom.ae_title, settings.web.port) == (104, "ED_TRIAGE", 8443)
    assert settings.dicom.peers[0].matches("CT1", "10.0.0.5")
    assert not settings.dicom.peers[0].matches("CT1", "10.0.0.6")
    assert settings.dicom.peers[1].matches("ANYONE", "127.0.0.1")
    [destination] = settings.dicom.destinations
    assert (destination.ae_title, destination.host, destination.port) == ("PACS", "pacs.local", 11112)
    assert settings.dicom.tls.enabled


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"APPLIANCE_DICOM_PORT": "70000"}, "dicom.port"),
        ({"APPLIANCE_DICOM_AE_TITLE": "A_TITLE_FAR_TOO_LONG"}, "dicom.ae_title"),
        ({"APPLIANCE_DICOM_PEERS": "nobody"}, "'nobody' is not AE@address"),
        ({"APPLIANCE_DICOM_DESTINATIONS": "PACS@host"}, "'PACS@host' is not AE@host:port"),
        ({"APPLIANCE_DICOM_QUIET_PERIOD_S": "soon"}, "dicom.quiet_period_s"),
        ({"APPLIANCE_DICOM_RELEASE_GRACE_BY_AE": "CT1=-1"}, "'CT1=-1' is not AE=seconds"),
        ({"APPLIANCE_DICOM_RELEASE_GRACE_BY_AE": "CT1"}, "'CT1' is not AE=seconds"),
        ({"APPLIANCE_WORKER_PREPARE_CACHE_MB": "4000"}, "prepare_cache_mb must be at most half"),
        ({"APPLIANCE_DICOM_PRT": "11112"}, "APPLIANCE_DICOM_PRT: no such setting"),
    ],
)
def test_a_bad_value_names_its_key(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(environ=environ)


def test_release_grace_by_calling_ae():
    dicom = load_settings(environ={"APPLIANCE_DICOM_RELEASE_GRACE_BY_AE": "CT1=0, MR2=2.5"}).dicom
    assert dicom.release_grace_by_ae == (("CT1", 0.0), ("MR2", 2.5))
    assert (dicom.release_grace_for("CT1"), dicom.release_grace_for("MR2 "), dicom.release_grace_for("US3")) == (
        0.0, 2.5, dicom.release_grace_s)


def test_a_learned_grace_is_0_after_the_clean_run_and_a_named_one_always_wins():
    dicom = load_settings(environ={"APPLIANCE_DICOM_RELEASE_GRACE_BY_AE": "CT1=2.5",
                                   "APPLIANCE_DICOM_LEARN_GRACE_AFTER_SERIES": "20"}).dicom
    assert dicom.release_grace_for("CT2", 19) == dicom.release_grace_s == 1.0
    assert dicom.release_grace_for("CT2", 20) == 0.0
    assert dicom.release_grace_for("CT1", 500) == 2.5, "release_grace_by_ae wins over what was learned"
    never = load_settings(environ={"APPLIANCE_DICOM_LEARN_GRACE_AFTER_SERIES": "0"}).dicom
    assert never.release_grace_for("CT2", 10_000) == 1.0


def test_validate_command_names_the_bad_key_in_a_file(tmp_path):
    bad = tmp_path / "appliance.toml"
    bad.write_text('[dicom]\nport = 11112\nmax_associations = 0\ncolour = "blue"\n')
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "config", "validate", str(bad)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "dicom.max_associations" in result.stderr and "dicom.colour: unknown key" in result.stderr

    good = subprocess.run([sys.executable, "-m", "appliance.cli", "config", "validate",
                           str(DEFAULT_CONFIG_PATH)], capture_output=True, text=True, cwd=REPO)
    assert good.returncode == 0, good.stderr


def test_broken_toml_is_reported_with_the_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[dicom\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(broken)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[dicom]\nport = true\n", "dicom.port: Value error, must be a number"),
        ("[dicom]\nacse_timeout_s = false\n", "dicom.acse_timeout_s: Value error, must be a number"),
        ("[dicom]\nopen_mode = 1\n", "dicom.open_mode: Value error, must be true or false"),
        ('[dicom]\npeers = ["AE@@"]\n', "'@' is not an IP address"),
        ('[dicom]\npeers = ["CT@scanner.local"]\n', "'scanner.local' is not an IP address"),
    ],
    ids=["port-true", "timeout-false", "switch-1", "peer-AE@@", "peer-hostname"],
)
def test_settings_refuse_loose_types_and_malformed_peers(tmp_path, toml, message):
    """Found by issue 13 (item 11): ``port = true`` became port 1 and ``AE@@`` a peer;
    both validated on the code before this test."""
    path = tmp_path / "appliance.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_numbers_and_switches_still_parse_from_the_environment():
    settings = load_settings(environ={"APPLIANCE_DICOM_PORT": "104", "APPLIANCE_DICOM_OPEN_MODE": "true",
                                      "APPLIANCE_DICOM_PEERS": "CT@10.0.0.5,*@::1"})
    assert settings.dicom.port == 104 and settings.dicom.open_mode is True
    assert [p.address for p in settings.dicom.peers] == ["10.0.0.5", "::1"]


def test_the_inflate_cap_is_derived_from_the_image_bounds():
    """Issue 13, item 3: the cap was a flat 2 GiB whatever the image bounds."""
    dicom = load_settings(environ={"APPLIANCE_DICOM_MAX_PIXEL_BYTES": str(256 * 1024**2)}).dicom
    assert dicom.inflate_cap == 256 * 1024**2 + 64 * 1024**2
    pinned = load_settings(environ={"APPLIANCE_DICOM_MAX_INFLATED_BYTES": "1048576"}).dicom
    assert pinned.inflate_cap == 1048576

"""Peers and destinations changed on the admin page: kept beside the data, applied at load."""

from __future__ import annotations

import json

import pytest

from appliance.config import Destination, load_settings, local_dicom_path, read_local_dicom
from appliance.errors import ConfigError


def _environ(tmp_path, **extra: str) -> dict[str, str]:
    return {"APPLIANCE_DATA_DIR": str(tmp_path), **extra}


def _write(tmp_path, content) -> None:
    local_dicom_path(tmp_path).write_text(content if isinstance(content, str) else json.dumps(content))


def test_no_file_changes_nothing(tmp_path):
    settings = load_settings(environ=_environ(tmp_path, APPLIANCE_DICOM_PEERS="CT1@10.0.0.5"))
    assert [p.text for p in settings.dicom.peers] == ["CT1@10.0.0.5"]
    assert read_local_dicom(local_dicom_path(tmp_path)) == {"peers": {"added": [], "removed": []},
                                                            "destinations": {"added": [], "removed": []}}


def test_additions_and_removals_apply_on_top_of_the_file_and_the_environment(tmp_path):
    _write(tmp_path, {"peers": {"added": ["CT2@10.0.0.6", " MR1@::1 "], "removed": ["CT1@10.0.0.5"]},
                      "destinations": {"added": ["NEW@pacs.local:104"], "removed": []}})
    settings = load_settings(environ=_environ(
        tmp_path, APPLIANCE_DICOM_PEERS="CT1@10.0.0.5,*@127.0.0.1", APPLIANCE_DICOM_DESTINATIONS="PACS@10.0.0.9:11112"))
    assert [p.text for p in settings.dicom.peers] == ["*@127.0.0.1", "CT2@10.0.0.6", "MR1@::1"]
    assert settings.dicom.destinations == (Destination(ae_title="PACS", host="10.0.0.9", port=11112),
                                           Destination(ae_title="NEW", host="pacs.local", port=104))
    assert settings.dicom.peers[1].matches("CT2", "10.0.0.6")


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "not readable JSON"),
    ({"listeners": {}}, "expected an object with only peers and destinations"),
    ({"peers": {"added": "CT@1.2.3.4"}}, "peers.added: expected a list"),
    ({"peers": {"added": ["CT@scanner"]}}, "peers.added: 'CT@scanner': 'scanner' is not an IP address or *"),
    ({"destinations": {"removed": ["PACS@host:0"]}}, "destinations.removed: 'PACS@host:0': port 0 is not in 1-65535"),
    ({"destinations": {"added": ["A_TITLE_LONGER_THAN_16@h:1"]}}, "destinations.added: must be 1-16 printable"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_key(tmp_path, content, words):
    _write(tmp_path, content)
    with pytest.raises(ConfigError, match="dicom-endpoints.json") as caught:
        load_settings(environ=_environ(tmp_path))
    assert words in str(caught.value)

"""Adding and removing peers and destinations: checked, kept across a restart, audited."""

from __future__ import annotations

import json

import pytest

from appliance.config import load_settings, local_dicom_path
from appliance.db import open_database
from appliance.errors import ConfigError
from appliance.web.dicom_endpoints import change, listing, saved


@pytest.fixture
def box(tmp_path):
    environ = {"APPLIANCE_DATA_DIR": str(tmp_path), "APPLIANCE_DICOM_PEERS": "CT1@10.0.0.5",
               "APPLIANCE_DICOM_DESTINATIONS": "PACS@10.0.0.9:104"}
    return environ, load_settings(environ=environ), open_database(tmp_path / "appliance.db").conn


def _audit(conn) -> list[tuple[str, dict]]:
    return [(k, json.loads(p)) for k, p in conn.execute(
        "SELECT kind, payload FROM audit_log WHERE kind LIKE 'dicom-%' ORDER BY seq")]


def test_changes_are_saved_audited_and_seen_by_the_next_start(box):
    environ, running, conn = box
    assert change(conn, running, "peers", "add", " MR1@10.0.0.7 ", "web:bio") == "MR1@10.0.0.7"
    change(conn, running, "peers", "remove", "CT1@10.0.0.5", "web:bio")
    change(conn, running, "destinations", "add", "ARCHIVE@archive.local:11112", "web:bio")
    change(conn, running, "destinations", "remove", "PACS@10.0.0.9:104", "web:bio")
    assert [p.text for p in running.dicom.peers] == ["CT1@10.0.0.5"]  # this process: unchanged until restart
    restarted = load_settings(environ=environ)
    assert [p.text for p in restarted.dicom.peers] == ["MR1@10.0.0.7"]
    assert [d.text for d in restarted.dicom.destinations] == ["ARCHIVE@archive.local:11112"]
    assert saved(running).dicom == restarted.dicom
    assert _audit(conn) == [
        ("dicom-peer-added", {"peer": "MR1@10.0.0.7", "actor": "web:bio", "effective": "after a restart"}),
        ("dicom-peer-removed", {"peer": "CT1@10.0.0.5", "actor": "web:bio", "effective": "after a restart"}),
        ("dicom-destination-added", {"destination": "ARCHIVE@archive.local:11112", "actor": "web:bio",
                                     "effective": "after a restart"}),
        ("dicom-destination-removed", {"destination": "PACS@10.0.0.9:104", "actor": "web:bio",
                                       "effective": "after a restart"})]


def test_a_change_undone_leaves_no_trace_in_the_file(box):
    environ, running, conn = box
    change(conn, running, "peers", "remove", "CT1@10.0.0.5", "t")
    change(conn, running, "peers", "add", "CT1@10.0.0.5", "t")
    change(conn, running, "peers", "add", "CT2@10.0.0.6", "t")
    change(conn, running, "peers", "remove", "CT2@10.0.0.6", "t")
    assert [p.text for p in load_settings(environ=environ).dicom.peers] == ["CT1@10.0.0.5"]
    assert json.loads(local_dicom_path(running.data_dir).read_text())["peers"] == {"added": [], "removed": []}
    assert [a.get("undoes") for _, a in _audit(conn)] == [None, "the saved removal", None, "the saved addition"]


def test_an_undone_addition_does_not_suppress_the_entry_when_the_environment_lists_it_later(box):
    """Issue 26: add X, remove X, then X in the environment: X was silently suppressed and
    ``remove X`` said it was not listed."""
    environ, running, conn = box
    change(conn, running, "peers", "add", "X@10.0.0.8", "t")
    change(conn, running, "peers", "remove", "X@10.0.0.8", "t")
    environ = {**environ, "APPLIANCE_DICOM_PEERS": "CT1@10.0.0.5,X@10.0.0.8"}
    restarted = load_settings(environ=environ)
    assert [p.text for p in restarted.dicom.peers] == ["CT1@10.0.0.5", "X@10.0.0.8"]
    change(conn, restarted, "peers", "remove", "X@10.0.0.8", "t")
    assert [p.text for p in load_settings(environ=environ).dicom.peers] == ["CT1@10.0.0.5"]
    assert listing(load_settings(environ=environ), "peers") == [("CT1@10.0.0.5", "configuration"),
                                                                ("X@10.0.0.8", "removed here")]


@pytest.mark.parametrize(("kind", "action", "text", "words"), [
    ("peers", "add", "CT1", "peer: 'CT1' is not AE@address (expected AE@address)"),
    ("peers", "add", "CT1@10.0.0.5", "peer: CT1@10.0.0.5 is already listed"),
    ("peers", "remove", "CT9@10.0.0.5", "peer: CT9@10.0.0.5 is not listed"),
    ("destinations", "add", "PACS@host", "destination: 'PACS@host' is not AE@host:port"),
    ("destinations", "add", "BACK\\SLASH@h:1", "destination: must be 1-16 printable ASCII characters"),
    ("listeners", "add", "X@1.2.3.4", "kind: 'listeners' is not peers or destinations"),
])
def test_bad_changes_are_refused_naming_the_field_and_leave_no_trace(box, kind, action, text, words):
    _, running, conn = box
    with pytest.raises(ConfigError) as caught:
        change(conn, running, kind, action, text, "t")
    assert str(caught.value).startswith(words)
    assert not local_dicom_path(running.data_dir).exists() and _audit(conn) == []


def test_the_cli_changes_the_same_file_through_the_same_function(tmp_path, monkeypatch, capsys):
    from appliance import cli

    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APPLIANCE_DICOM_DESTINATIONS", "PACS@10.0.0.9:104")
    assert cli.main(["dicom", "destinations", "add", "ARCHIVE@10.0.0.8:11112"]) == 0
    assert cli.main(["dicom", "destinations", "remove", "PACS@10.0.0.9:104"]) == 0
    assert "after the appliance service restarts" in capsys.readouterr().out
    assert cli.main(["dicom", "peers", "add", "CT@scanner"]) == 2
    assert "peer: 'CT@scanner': 'scanner' is not an IP address or *" in capsys.readouterr().err
    assert [d.text for d in load_settings().dicom.destinations] == ["ARCHIVE@10.0.0.8:11112"]
    actors = [p["actor"] for _, p in _audit(open_database(tmp_path / "appliance.db").conn)]
    assert len(actors) == 2 and all(a.startswith("cli:") for a in actors)

"""Issue 26: ``appliance dicom peers|destinations list`` prints a table a biomed engineer
reads: each entry the next start uses, where it comes from, and what was removed here."""

from __future__ import annotations

import json

import pytest

from appliance.cli import main


@pytest.fixture
def environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APPLIANCE_DICOM_PEERS", "CT1@10.0.0.5,MR1@10.0.0.6")
    monkeypatch.delenv("APPLIANCE_DICOM_DESTINATIONS", raising=False)
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)


def _run(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_peers_list_shows_each_entry_and_where_it_comes_from(environment, capsys):
    _run(capsys, "dicom", "peers", "add", "US1@10.0.0.7")
    _run(capsys, "dicom", "peers", "remove", "MR1@10.0.0.6")
    lines = _run(capsys, "dicom", "peers", "list").splitlines()
    assert lines[0].split() == ["AE@address", "where", "it", "comes", "from"]
    assert set(lines[1]) <= {"-", " "}
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[2:5]}
    assert rows == {"CT1@10.0.0.5": "from the configuration file or the environment",
                    "US1@10.0.0.7": "added on this appliance",
                    "MR1@10.0.0.6": "removed on this appliance: not used"}
    assert "after the appliance service restarts" in lines[-1]


def test_an_undone_change_leaves_the_list_as_configured(environment, capsys):
    _run(capsys, "dicom", "peers", "add", "US1@10.0.0.7")
    _run(capsys, "dicom", "peers", "remove", "US1@10.0.0.7")
    out = _run(capsys, "dicom", "peers", "list")
    assert "US1" not in out and "restarts" not in out
    assert "CT1@10.0.0.5" in out and "MR1@10.0.0.6" in out


def test_no_destination_says_where_results_go(environment, capsys):
    assert _run(capsys, "dicom", "destinations", "list").strip() == "no destinations: results stay on the appliance"


def test_config_show_gives_the_peers_and_destinations_after_the_changes_made_here(environment, capsys):
    """Issue 26: `config show` is the effective settings, so it includes what was changed on the box."""
    _run(capsys, "dicom", "peers", "add", "US1@10.0.0.7")
    _run(capsys, "dicom", "peers", "remove", "MR1@10.0.0.6")
    _run(capsys, "dicom", "destinations", "add", "PACS@10.0.0.9:104")
    dicom = json.loads(_run(capsys, "config", "show"))["dicom"]
    assert [(p["ae_title"], p["address"]) for p in dicom["peers"]] == [("CT1", "10.0.0.5"), ("US1", "10.0.0.7")]
    assert [(d["ae_title"], d["host"], d["port"]) for d in dicom["destinations"]] == [("PACS", "10.0.0.9", 104)]

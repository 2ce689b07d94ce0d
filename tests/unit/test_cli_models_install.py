"""``appliance models install`` says what the installed version does next: nothing until a
person puts it in shadow or makes it active, and the two commands that do."""

from __future__ import annotations

from appliance.cli import main


def test_an_installed_version_is_said_to_read_nothing_until_shadowed_or_activated(tmp_path, monkeypatch, capsys,
                                                                                demo_packages):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APPLIANCE_MODELS_TRUSTED_KEYS", str(demo_packages["public_key"]))
    [package] = demo_packages["head-ct"]
    assert main(["models", "install", str(package)]) == 0
    said = capsys.readouterr().out
    label = package.stem.replace("head-ct-ich-demo-", "head-ct-ich-demo ")
    assert said.splitlines()[0] == f"installed {label} (installed)"
    version = label.split()[1]
    assert (f"it reads no series until it is put in shadow (appliance models shadow head-ct-ich-demo {version}) "
            f"or made active (appliance models activate head-ct-ich-demo {version})") in said

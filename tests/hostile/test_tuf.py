"""Hostile releases through TUF from a real hub process to an enrolled box: a package
served past its signed length, and one signed by a key the box does not trust; neither is
installed and the round names why."""

from __future__ import annotations

import json

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.sync.round import enrol, run_round
from tests.helpers.hostile import case
from tests.helpers.hub import CHEST_PACKAGE, box_settings
from tests.helpers.packages import members
from training.hub.repository import Repository
from training.package import generate_keypair, load_private_key, write_package

CHEST = CHEST_PACKAGE


def models(settings) -> list[tuple[str, str, str]]:
    registry = ModelRegistry(open_database(settings.db_path), settings.models_dir, [])
    return [(m.id, m.version, m.state) for m in registry.models()]


def a_round(settings):
    return run_round(settings, Parts(settings).registry(), sleep=lambda _: None)


def enrolled(hub, tmp_path):
    box = box_settings(tmp_path / "box")
    enrol(box, hub.url, hub.token())
    return box


@case("T5-endless-target")
def test_an_endless_package_is_cut_at_its_signed_length(hub, tmp_path, case_id):
    """The hub's copy of a published package grows to 4 times its signed length (what an
    endless stream looks like to the box until it stops reading)."""
    box = enrolled(hub, tmp_path)
    hub.publish(CHEST)
    served = Repository(hub.data_dir).targets_dir / CHEST.name
    signed_length = served.stat().st_size
    with open(served, "ab") as grow:
        grow.write(bytes(3 * signed_length))
    result = a_round(box)
    assert result.staged == [] and models(box) == []
    assert "length or hash mismatch" in (result.release_error or ""), result
    downloads = box.data_dir / "sync" / "downloads"
    assert not downloads.exists() or all(p.stat().st_size <= signed_length for p in downloads.iterdir())


@case("T6-wrong-package-key")
def test_a_package_signed_by_an_untrusted_key_is_not_installed(hub, tmp_path, case_id):
    """TUF-valid (a compromised hub signs it as a target, past the publish command's own
    package check), but the package itself is signed by a key the box does not trust."""
    box = enrolled(hub, tmp_path)
    key, _ = generate_keypair(tmp_path / "untrusted.key")
    files = members(CHEST)
    manifest = json.loads(files.pop("manifest.json"))
    files.pop("manifest.json.sig")
    manifest.pop("files"), manifest.pop("signing_public_key")
    manifest["version"] = "1.4.0"
    package = tmp_path / f"{manifest['id']}-1.4.0.tar"
    write_package(package, manifest, files, load_private_key(key))
    Repository(hub.data_dir).publish(package, hub.data_dir / "offline-keys", model_id=manifest["id"],
                                     version="1.4.0", ring="all", min_appliance_version="0.1.0")
    result = a_round(box)
    assert result.staged == [] and models(box) == []
    assert "untrusted key" in (result.release_error or ""), result

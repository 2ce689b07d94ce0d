"""Releases through TUF against a real hub process: expired, rolled-back, mixed-and-matched,
unsigned, tampered metadata and a tampered package are each refused with the reason while
the installed models stay as they are; a download cut in the middle resumes and verifies.
Each runs on SQLite and on PostgreSQL like the rest of the suite.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
from datetime import datetime, timedelta, timezone

from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.sync.round import enrol, run_round, status
from tests.helpers.hub import (CHEST_LABEL, CHEST_PACKAGE, CHEST_VERSION, HEAD_LABEL, HEAD_PACKAGE, HEAD_VERSION,
                               box_settings)
from training.hub.repository import Repository

CHEST = CHEST_PACKAGE
HEAD = HEAD_PACKAGE


def _models(settings) -> list[tuple[str, str, str]]:
    registry = ModelRegistry(open_database(settings.db_path), settings.models_dir, [])
    return [(m.id, m.version, m.state) for m in registry.models()]


def _round(settings):
    return run_round(settings, Parts(settings).registry(), sleep=lambda _: None)


def test_bad_metadata_and_a_tampered_package_are_refused_with_the_reason(hub, tmp_path):
    box = box_settings(tmp_path / "box")
    enrol(box, hub.url, hub.token())
    hub.publish(CHEST)
    assert _round(box).staged == [CHEST_LABEL]
    before = _models(box)
    repository = Repository(hub.data_dir)
    offline = hub.data_dir / "offline-keys"
    metadata = repository.metadata_dir
    saved = {name: (metadata / name).read_bytes() for name in ("timestamp.json", "snapshot.json", "targets.json")}

    def publish_elsewhere(name: str) -> None:
        """A new target this box does not take (pilot ring): new targets/snapshot/timestamp."""
        package = tmp_path / f"{name}.tar"
        package.write_bytes(name.encode() * 100)
        repository.publish(package, offline, model_id=name, version="1.0.0", ring="pilot",
                           min_appliance_version="0.1.0")

    def refused(reason: str) -> None:
        result = _round(box)
        assert result.release_error and reason in result.release_error, result.release_error
        assert result.staged == [] and _models(box) == before  # updates blocked, models untouched
        assert status(box)["last_round"]["release_error"] == result.release_error

    # rolled back: the box already trusts a newer timestamp than the one served
    publish_elsewhere("other-a")
    assert _round(box).release_error is None
    (metadata / "timestamp.json").write_bytes(saved["timestamp.json"])
    refused("rolled-back metadata: New timestamp version")
    repository.refresh_online(force=True)

    # expired: the online timestamp signature ran out (the hub stopped re-signing)
    repository.refresh_online(now=datetime.now(timezone.utc) - timedelta(days=2), force=True)
    refused("expired metadata: timestamp.json is expired")
    repository.refresh_online(force=True)
    assert _round(box).release_error is None

    # mixed and matched: the new snapshot names targets v(n+1), the hub serves targets v(n)
    old_targets = (metadata / "targets.json").read_bytes()
    publish_elsewhere("other-b")
    (metadata / "targets.json").write_bytes(old_targets)
    refused("mixed-and-matched metadata: Expected targets v")
    publish_elsewhere("other-c")
    assert _round(box).release_error is None

    # unsigned: the signatures stripped; tampered: a signed field edited afterwards
    current = (metadata / "timestamp.json").read_bytes()
    unsigned = json.loads(current)
    unsigned["signatures"] = []
    unsigned["signed"]["version"] += 1
    (metadata / "timestamp.json").write_text(json.dumps(unsigned))
    refused("unsigned or tampered metadata")
    edited = json.loads(current)
    edited["signed"]["version"] += 1
    edited["signed"]["expires"] = "2099-01-01T00:00:00Z"
    (metadata / "timestamp.json").write_text(json.dumps(edited))
    refused("unsigned or tampered metadata")
    repository.refresh_online(force=True)

    # a tampered package: same length, one byte changed after it was signed as a target
    hub.publish(HEAD)
    served = repository.targets_dir / HEAD.name
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    refused("tampered data (length or hash mismatch)")
    shutil.copyfile(HEAD, served)
    assert _round(box).staged == [HEAD_LABEL]
    assert ("head-ct-ich-demo", HEAD_VERSION, "shadow") in _models(box)


class CuttingProxy:
    """A TCP proxy to the hub that cuts the first package download after ``cut_after``
    bytes of response and records every ``Range:`` header it forwards."""

    def __init__(self, upstream_port: int, cut_after: int):
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.ranges: list[str] = []
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"cutting": False, "forwarded": 0}
            threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, state), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        try:
            while data := client.recv(65536):
                text = data.decode("latin-1")
                self.ranges += re.findall(r"(?im)^range:\s*(bytes=\S+)", text)
                if "GET /tuf/targets/" in text and not self.cut.is_set():
                    state["cutting"] = True
                upstream.sendall(data)
        except OSError:
            pass

    def _responses(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while data := upstream.recv(65536):
                if state["cutting"] and not self.cut.is_set():
                    room = self.cut_after - state["forwarded"]
                    if len(data) >= room:
                        client.sendall(data[:room])
                        self.cut.set()
                        break
                    state["forwarded"] += len(data)
                client.sendall(data)
        except OSError:
            pass
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_download_cut_in_the_middle_resumes_with_range_and_verifies(hub, tmp_path):
    proxy = CuttingProxy(hub.port, cut_after=1_000_000)
    try:
        box = box_settings(tmp_path / "box")
        enrol(box, proxy.url, hub.token())
        hub.publish(CHEST)
        result = _round(box)
        assert proxy.cut.is_set(), "the proxy never cut the download"
        assert result.staged == [CHEST_LABEL], result
        offsets = [int(r.split("=")[1].split("-")[0]) for r in proxy.ranges]
        assert offsets and 0 < offsets[0] <= 1_000_000  # resumed where it broke, not from zero
        assert _models(box) == [("chest-cr-pneumothorax-demo", CHEST_VERSION, "shadow")]
        assert not list((box.data_dir / "sync" / "downloads").glob("*.partial"))
    finally:
        proxy.close()

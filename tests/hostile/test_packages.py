"""Hostile model packages uploaded to the web app's API over a real socket: each refused
with a 400 naming why and nothing installed; hostile text in a trusted one shown escaped;
a package's signature checked before its members are read."""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import httpx
import pytest

from tests.helpers.hostile import case
from tests.helpers.hub import HEAD_PACKAGE
from tests.helpers.packages import members, rewrite
from training.package import generate_keypair, load_private_key, write_package

HEAD = HEAD_PACKAGE
SCRIPT = "<script>document.title='pwned'</script>"
IMG = '"><img src=x onerror="document.title=\'pwned\'">'


def api(box) -> httpx.Client:
    return httpx.Client(base_url=box.url, timeout=120,
                        headers={"Authorization": f"Bearer {box.series['biomed-token']}"})


def installed(box) -> list[tuple[str, str]]:
    with api(box) as client:
        answer = client.get("/api/models")
        assert answer.status_code == 200
        body = answer.json()
        rows = body["models"] if isinstance(body, dict) else body
        return sorted((m["id"], m["version"]) for m in rows)


def _refusals(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    files = members(HEAD)
    unsigned = {name: data for name, data in files.items() if name != "manifest.json.sig"}
    untrusted_key, _ = generate_keypair(tmp_path / "untrusted.key")
    manifest = json.loads(files["manifest.json"])
    content = {n: d for n, d in files.items() if n not in ("manifest.json", "manifest.json.sig")}
    manifest.pop("files"), manifest.pop("signing_public_key")
    manifest["version"] = "9.9.9"
    write_package(tmp_path / "untrusted.tar", manifest, content, load_private_key(untrusted_key))
    device = tarfile.TarInfo("model/dev")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    with tarfile.open(tmp_path / "device.tar", "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(device)
    made = {
        "unsigned": (rewrite(HEAD, tmp_path / "unsigned.tar", unsigned), "unsigned"),
        "untrusted-key": (tmp_path / "untrusted.tar", "untrusted key"),
        "dot-dot-member": (rewrite(HEAD, tmp_path / "dotdot.tar", {**files, "../evil": b"x"}), ".."),
        "absolute-member": (rewrite(HEAD, tmp_path / "abs.tar", {**files, "/etc/evil": b"x"}), "/etc/evil"),
        "symlink-member": (rewrite(HEAD, tmp_path / "sym.tar", files, {"model/link": (tarfile.SYMTYPE, "/etc/passwd")}),
                           "link"),
        "hardlink-member": (rewrite(HEAD, tmp_path / "hard.tar", files, {"model/hard": (tarfile.LNKTYPE, "/etc/passwd")}),
                            "link"),
        "device-member": (tmp_path / "device.tar", "model/dev"),
    }
    out = {name: (path.read_bytes(), words) for name, (path, words) in made.items()}
    out["not-a-tar"] = (b"this is not a tar archive at all" * 100, "not a readable tar")
    out["empty-body"] = (b"", "")
    return out


@case("U1-refusals")
def test_refused_uploads_are_400_with_the_reason_and_install_nothing(models_web, tmp_path, case_id):
    before = installed(models_web)
    with api(models_web) as client:
        for name, (body, words) in _refusals(tmp_path).items():
            answer = client.post("/api/models", content=body)
            assert answer.status_code == 400, (name, answer.status_code, answer.text[:300])
            assert words.lower() in answer.text.lower(), (name, answer.text[:300])
    assert installed(models_web) == before
    uploads = models_web.settings.data_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


@case("U5-card-upload")
def test_hostile_text_in_a_model_card_is_shown_escaped(models_web, tmp_path, case_id):
    files = members(HEAD)
    manifest = json.loads(files.pop("manifest.json"))
    files.pop("manifest.json.sig")
    manifest.pop("files"), manifest.pop("signing_public_key")
    manifest["version"] = "1.2.2"
    files[manifest["model_card"]] = f"# Card {SCRIPT}\n\n{IMG}\n\n[link](javascript:alert(1))\n".encode()
    if isinstance(manifest.get("finding"), str):
        manifest["finding"] = f"bleed {SCRIPT}"
    key = Path(models_web.series["private-key"])
    write_package(tmp_path / "hostile-card.tar", manifest, files, load_private_key(key))
    with api(models_web) as client:
        answer = client.post("/api/models", content=(tmp_path / "hostile-card.tar").read_bytes())
        assert answer.status_code == 200, answer.text[:500]
    assert (manifest["id"], "1.2.2") in installed(models_web)
    from tests.helpers.boxes import session_client

    bio, _ = session_client(models_web, "bio")
    try:
        for path in ("/admin", "/admin/models", "/admin/audit", "/admin/drift"):
            page = bio.get(path)
            assert page.status_code == 200, path
            assert SCRIPT not in page.text and IMG not in page.text and "javascript:" not in page.text, path
    finally:
        bio.close()


@pytest.fixture
def corrupt_behind_its_signature(tmp_path) -> Path:
    """A gzipped package signed by an untrusted key: its manifest and signature first, then
    the header of a 3 GiB ``model/evil.bin`` and 1 MiB of its zeros, then bytes that are
    no deflate data. Only a verifier that reads a member before checking the signature
    ever meets the corrupt data; one that checks first names the key."""
    untrusted_key, _ = generate_keypair(tmp_path / "untrusted.key")
    files = members(HEAD)
    manifest = json.loads(files["manifest.json"])
    manifest.pop("files"), manifest.pop("signing_public_key")
    signed = tmp_path / "signed.tar"
    write_package(signed, manifest, {n: d for n, d in files.items() if n not in ("manifest.json", "manifest.json.sig")},
                  load_private_key(untrusted_key))
    head = members(signed)
    raw = io.BytesIO()
    tar = tarfile.open(fileobj=raw, mode="w")
    for name in ("manifest.json", "manifest.json.sig"):
        info = tarfile.TarInfo(name)
        info.size = len(head[name])
        tar.addfile(info, io.BytesIO(head[name]))
    two_members = raw.getvalue()[: tar.offset]  # no end-of-archive blocks
    evil = tarfile.TarInfo("model/evil.bin")
    evil.size = 3 * 1024**3
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    body = gz.compress(two_members + evil.tobuf() + bytes(1024 * 1024)) + gz.flush(zlib.Z_SYNC_FLUSH)
    out = tmp_path / "evil.tar.gz"
    out.write_bytes(body + b"\xff" * 65536)
    return out


@case("U2-bomb-bin")
def test_the_signature_is_checked_before_any_member_is_read(models_web, corrupt_behind_its_signature, case_id):
    with api(models_web) as client:
        answer = client.post("/api/models", content=corrupt_behind_its_signature.read_bytes())
    assert answer.status_code == 400
    assert "untrusted key" in answer.json()["error"], answer.json()

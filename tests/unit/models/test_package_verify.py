import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import threading
import tracemalloc

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.errors import PackageError
from appliance.models.manifest import Aggregation, InputSpec, Window
from appliance.models.package import extract_package, read_package, verify_package
from tests.helpers.packages import FILES, manifest_fields, members, rewrite, tiny_onnx
from training.package import load_private_key, resign_package, write_package


def test_valid_package_verifies_and_returns_manifest(package, keys):
    m = verify_package(package, [keys["public"]])
    assert (m.id, m.version, m.input.size, m.input.channels) == ("test-model", "1.2.3", 32, 3)
    assert m.input.window_tuples()[0] == ("brain", 40.0, 80.0)
    assert m.aggregation.method == "topk_mean" and m.aggregation.k == 2
    assert sorted(f.path for f in m.files) == sorted(FILES)
    assert len(m.signing_key_id) == 16


def test_trust_check_accepts_any_of_several_keys(package, keys):
    assert verify_package(package, [keys["other_public"], keys["public"]]).id == "test-model"


def test_none_checks_integrity_against_the_named_key(package):
    assert verify_package(package, None).id == "test-model"


def test_one_byte_changed_in_a_file_names_the_file(package, tmp_path, keys):
    files = members(package)
    data = bytearray(files["model/fp32.onnx"])
    data[17] ^= 0x01
    files["model/fp32.onnx"] = bytes(data)
    bad = rewrite(package, tmp_path / "bad.tar", files)
    with pytest.raises(PackageError, match=r"hash mismatch for 'model/fp32.onnx'"):
        verify_package(bad, [keys["public"]])


def test_one_byte_changed_in_manifest_is_a_bad_signature(package, tmp_path, keys):
    files = members(package)
    files["manifest.json"] = files["manifest.json"].replace(b'"1.2.3"', b'"1.2.4"')
    bad = rewrite(package, tmp_path / "bad.tar", files)
    with pytest.raises(PackageError, match="bad signature"):
        verify_package(bad, [keys["public"]])
    with pytest.raises(PackageError, match="bad signature"):
        verify_package(bad, None)


def test_wrong_key_is_untrusted_and_names_both_keys(package, keys):
    with pytest.raises(PackageError, match=r"untrusted key: signed by key [0-9a-f]{16}, trusted keys are [0-9a-f]{16}"):
        verify_package(package, [keys["other_public"]])


def test_missing_file(package, tmp_path, keys):
    files = members(package)
    del files["golden/golden.npz"]
    with pytest.raises(PackageError, match=r"missing file 'golden/golden.npz'"):
        verify_package(rewrite(package, tmp_path / "bad.tar", files), [keys["public"]])


def test_missing_signature_is_unsigned(package, tmp_path, keys):
    files = members(package)
    del files["manifest.json.sig"]
    with pytest.raises(PackageError, match=r"missing file 'manifest.json.sig' \(unsigned package\)"):
        verify_package(rewrite(package, tmp_path / "bad.tar", files), [keys["public"]])


def test_extra_file(package, tmp_path, keys):
    files = members(package) | {"model/backdoor.onnx": b"x"}
    with pytest.raises(PackageError, match=r"extra file 'model/backdoor.onnx'"):
        verify_package(rewrite(package, tmp_path / "bad.tar", files), [keys["public"]])


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/cron.d/evil", "model/../../evil", "./model/x", "C:/evil"])
def test_path_traversal_member_is_refused(package, tmp_path, keys, name):
    files = members(package) | {name: b"x"}
    with pytest.raises(PackageError, match="path traversal"):
        verify_package(rewrite(package, tmp_path / "bad.tar", files), [keys["public"]])


def test_symlink_member_is_refused(package, tmp_path, keys):
    bad = rewrite(package, tmp_path / "bad.tar", members(package), {"model/link": (tarfile.SYMTYPE, "/etc/passwd")})
    with pytest.raises(PackageError, match=r"member 'model/link' is a symlink \(to '/etc/passwd'\)"):
        verify_package(bad, [keys["public"]])


def test_hardlink_member_is_refused(package, tmp_path, keys):
    bad = rewrite(package, tmp_path / "bad.tar", members(package), {"model/hl": (tarfile.LNKTYPE, "MODEL_CARD.md")})
    with pytest.raises(PackageError, match="is a hardlink"):
        verify_package(bad, [keys["public"]])


def test_duplicate_member_is_refused(package, tmp_path, keys):
    files = members(package)
    with tarfile.open(tmp_path / "dup.tar", "w") as tar:
        for name in [*files, "MODEL_CARD.md"]:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    with pytest.raises(PackageError, match="appears more than once"):
        verify_package(tmp_path / "dup.tar", [keys["public"]])


def test_not_a_tar_and_absent_file(tmp_path, keys):
    (tmp_path / "junk.tar").write_bytes(b"\x00garbage" * 200)
    with pytest.raises(PackageError, match="not a readable tar archive"):
        verify_package(tmp_path / "junk.tar", [keys["public"]])
    with pytest.raises(PackageError, match="no such package file"):
        verify_package(tmp_path / "absent.tar", [keys["public"]])


def test_bad_trusted_key_file(package, tmp_path):
    (tmp_path / "k.pub").write_text("not a key")
    with pytest.raises(PackageError, match="k.pub: not a PEM public key"):
        verify_package(package, [tmp_path / "k.pub"])
    with pytest.raises(PackageError, match=r"absent.pub: cannot read it \(No such file or directory\)"):
        verify_package(package, [tmp_path / "absent.pub"])


def _signed_raw_manifest(package, tmp_path, keys, edit) -> object:
    """A package whose manifest was edited and then properly signed (so only the schema is wrong)."""
    files = members(package)
    manifest = json.loads(files.pop("manifest.json"))
    files.pop("manifest.json.sig")
    edit(manifest)
    raw = json.dumps(manifest).encode()
    key = load_private_key(keys["private"])
    files = {"manifest.json": raw, "manifest.json.sig": key.sign(raw), **files}
    return rewrite(package, tmp_path / "schema.tar", files)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m["input"].update(size=-1), "input.size"),
        (lambda m: m["input"].update(size=1_000_000), "input.size"),  # issue 24, U4: was installed
        (lambda m: m["input"].update(slab_mm=0), "input.slab_mm"),
        (lambda m: m.pop("operating_point"), "operating_point"),
        (lambda m: m.update(version="one"), "version"),
        (lambda m: m["variants"][0].update(backend="tensorrt"), "variants.0.backend"),
        (lambda m: m["aggregation"].pop("k"), "aggregation"),
        (lambda m: m.update(surprise=1), "surprise"),
    ],
)
def test_malformed_manifest_names_the_field(package, tmp_path, keys, edit, field):
    bad = _signed_raw_manifest(package, tmp_path, keys, edit)
    with pytest.raises(PackageError, match=rf"malformed manifest: field '{field}'"):
        verify_package(bad, [keys["public"]])


def _signed_raw_bytes(package, tmp_path, keys, raw: bytes) -> object:
    files = members(package)
    files.pop("manifest.json"), files.pop("manifest.json.sig")
    key = load_private_key(keys["private"])
    return rewrite(package, tmp_path / "raw.tar", {"manifest.json": raw, "manifest.json.sig": key.sign(raw), **files})


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"version": ' + b"9" * 5000 + b"}", "not valid JSON (Exceeds the limit"),
        (b'{"version": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
    ],
    ids=["5000-digit-integer", "200k-deep"],
)
def test_a_manifest_python_cannot_parse_is_refused_naming_why(package, tmp_path, keys, raw, words, signed):
    """Issue 24, U4-manifest-numbers. Before: both gave the upload a 500."""
    if signed:
        bad = _signed_raw_bytes(package, tmp_path, keys, raw)
    else:
        files = members(package)
        bad = rewrite(package, tmp_path / "raw.tar", {**files, "manifest.json": raw})
    with pytest.raises(PackageError, match=re.escape(f"malformed manifest: manifest.json is {words}")):
        verify_package(bad, [keys["public"]])


def test_slab_and_context_are_for_ct_slices_only():
    radiograph = {
        "kind": "radiograph",
        "modalities": ["CR"],
        "body_part": "CHEST",
        "sop_class_uids": ["1.2.3"],
        "channels": 1,
        "size": 32,
    }
    assert InputSpec.model_validate(radiograph).slab_mm is None
    with pytest.raises(ValidationError, match="slab_mm and context_slices apply to ct_slice inputs only"):
        InputSpec.model_validate({**radiograph, "slab_mm": 5.0})
    with pytest.raises(ValidationError, match="slab_mm and context_slices apply to ct_slice inputs only"):
        InputSpec.model_validate({**radiograph, "context_slices": 1})


def test_context_multiplies_the_channels_a_ct_input_needs():
    ct = {
        "kind": "ct_slice",
        "modalities": ["CT"],
        "body_part": "HEAD",
        "sop_class_uids": ["1.2.3"],
        "size": 32,
        "windows": [{"name": "brain", "center": 40, "width": 80}, {"name": "bone", "center": 600, "width": 2800}],
    }
    assert InputSpec.model_validate({**ct, "channels": 6, "context_slices": 1}).slices_per_input == 3
    with pytest.raises(ValidationError, match="each of its 3 slice"):
        InputSpec.model_validate({**ct, "channels": 2, "context_slices": 1})


def test_a_window_zeroes_dense_pixels_only_above_its_own_top():
    blood = Window.model_validate({"name": "blood", "center": 50, "width": 60, "zero_above": 200})
    assert blood.as_tuple() == ("blood", 50.0, 60.0, 200.0) and Window.from_tuple(blood.as_tuple()) == blood
    assert Window.from_tuple(("brain", 40.0, 80.0)).as_tuple() == ("brain", 40.0, 80.0)
    with pytest.raises(
        ValidationError, match="window 'blood': zero_above \\(70 HU\\) must not be below the window's top \\(80 HU\\)"
    ):
        Window.model_validate({"name": "blood", "center": 50, "width": 60, "zero_above": 70})


def test_manifest_referencing_unlisted_file_is_malformed(tmp_path, keys):
    fields = manifest_fields()
    fields["golden"] = "golden/other.npz"
    with pytest.raises(ValidationError, match="golden/other.npz' is not listed in files"):
        write_package(tmp_path / "x.tar", fields, dict(FILES), load_private_key(keys["private"]))


def test_resign_moves_trust_to_the_new_key(package, tmp_path, keys):
    out = tmp_path / "resigned.tar"
    resign_package(package, out, load_private_key(keys["other_private"]))
    assert verify_package(out, [keys["other_public"]]).id == "test-model"
    with pytest.raises(PackageError, match="untrusted key"):
        verify_package(out, [keys["public"]])


def test_resign_as_another_version_states_it_and_keeps_the_files(package, tmp_path, keys):
    out = tmp_path / "later.tar"
    resign_package(package, out, load_private_key(keys["other_private"]), version="1.2.4")
    later, first = verify_package(out, [keys["other_public"]]), verify_package(package, [keys["public"]])
    assert (later.id, later.version) == ("test-model", "1.2.4")
    assert later.files == first.files


def test_extract_package_writes_verified_files(package, tmp_path, keys):
    dest = tmp_path / "installed"
    m = extract_package(package, dest, [keys["public"]])
    for f in m.files:
        assert (dest / f.path).read_bytes() == FILES[f.path]
    assert (dest / "manifest.json").exists() and (dest / "manifest.json.sig").stat().st_size == 64


def test_extract_refuses_a_tampered_package_before_writing(package, tmp_path, keys):
    files = members(package)
    files["MODEL_CARD.md"] = b"changed"
    bad = rewrite(package, tmp_path / "bad.tar", files)
    with pytest.raises(PackageError, match="hash mismatch for 'MODEL_CARD.md'"):
        extract_package(bad, tmp_path / "dest", [keys["public"]])
    assert not (tmp_path / "dest").exists()


def test_a_package_is_read_once_front_to_back(package, tmp_path, keys):
    """Fed through a pipe, which can be read only once: the checks, the unpacking, the
    kept copy and the package's hash all come from that one read."""
    pipe, data = tmp_path / "package.pipe", gzip.compress(package.read_bytes())
    os.mkfifo(pipe)

    def feed():
        with open(pipe, "wb") as stream:
            stream.write(data)

    done = {}
    threading.Thread(target=feed, daemon=True).start()
    reader = threading.Thread(
        target=lambda: done.update(
            read=read_package(pipe, [keys["public"]], into=tmp_path / "dest", copy_to=tmp_path / "copy.tar.gz")
        ),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=60)  # a deadline for failing: a second open of the pipe never returns
    assert "read" in done, "read_package opened the package more than once"
    assert done["read"].sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "copy.tar.gz").read_bytes() == data
    assert {f.path: (tmp_path / "dest" / f.path).read_bytes() for f in done["read"].manifest.files} == FILES


def test_a_refused_package_leaves_neither_files_nor_copy(package, tmp_path, keys):
    files = members(package)
    files["golden/golden.npz"] = b"changed"
    bad = rewrite(package, tmp_path / "bad.tar", files)
    with pytest.raises(PackageError, match="hash mismatch"):
        read_package(bad, [keys["public"]], into=tmp_path / "dest", copy_to=tmp_path / "copy.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "keys", "pkg.tar"]


def test_aggregation():
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    assert Aggregation(method="max").apply(scores) == pytest.approx(0.9)
    assert Aggregation(method="topk_mean", k=2).apply(scores) == pytest.approx(0.8)
    assert Aggregation(method="topk_mean", k=9).apply(scores) == pytest.approx(0.55)
    with pytest.raises(ValidationError):
        Aggregation(method="topk_mean")
    with pytest.raises(ValueError, match="empty"):
        Aggregation(method="max").apply(np.array([]))


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "fp32.onnx.data/../../../x", "absent.bin"])
def test_onnx_external_data_outside_the_package_is_refused(tmp_path, keys, location):
    """Issue 13, item 10. Before: a signed package whose model pointed its external data at
    ../../etc/passwd verified, installed and activated."""
    files = dict(FILES) | {"model/fp32.onnx": tiny_onnx(external=location)}
    out = tmp_path / "evil.tar"
    write_package(out, manifest_fields(), files, load_private_key(keys["private"]))
    with pytest.raises(PackageError, match=r"model/fp32.onnx: external data location .* is not a file of the package"):
        verify_package(out, [keys["public"]])


def test_onnx_external_data_inside_the_package_verifies(tmp_path, keys):
    files = dict(FILES) | {"model/fp32.onnx": tiny_onnx(external="fp32.onnx.data"), "model/fp32.onnx.data": bytes(16)}
    out = tmp_path / "ok.tar"
    write_package(out, manifest_fields(), files, load_private_key(keys["private"]))
    assert verify_package(out, [keys["public"]]).id == "test-model"


def test_a_file_named_onnx_that_is_not_onnx_is_refused(tmp_path, keys):
    files = dict(FILES) | {"model/fp32.onnx": b"\xff" * 64}
    out = tmp_path / "junk.tar"
    write_package(out, manifest_fields(), files, load_private_key(keys["private"]))
    with pytest.raises(PackageError, match="not a readable ONNX model"):
        verify_package(out, [keys["public"]])


def test_an_unsigned_package_with_a_huge_model_is_refused_without_holding_it_in_memory(tmp_path, keys):
    """Issue 24, U2-bomb-onnx (scaled down). Before: every .onnx member was kept whole in
    memory while the archive was read, before the signature was looked at (a 3 GiB model
    in a 3 MB .tar.gz cost 3.15 GB)."""
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("model/evil.onnx")
        info.size = 160 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    tracemalloc.start()
    try:
        with pytest.raises(PackageError, match="missing file 'manifest.json'"):
            verify_package(bomb, [keys["public"]])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024  # tarfile's own gzip buffers: the same for any member size


def _header_only(path, files: dict[str, bytes], name: str, declared: int):
    """``files`` as a tar, then the header of a member ``name`` declaring ``declared``
    bytes, and the file ends there: whoever reads that member meets the end of the file."""
    rewrite(path.with_suffix(".head"), path, files)
    data = path.read_bytes().rstrip(b"\0")
    data = data + bytes(-len(data) % 512)
    info = tarfile.TarInfo(name)
    info.size = declared
    path.write_bytes(data + info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))
    return path


def test_an_unsigned_3_gib_member_is_refused_at_its_header_before_a_byte_of_it_is_read(tmp_path, keys):
    """Issue 24, U2-bomb (the rest of it): the signature is checked before any other member
    is read. Before: the member was read (inflated) to its end first; here the file ends
    after the header, so reading it failed as a corrupt archive instead."""
    bomb = _header_only(tmp_path / "bomb.tar", {}, "model/evil.onnx", 3 * 1024**3)
    with pytest.raises(PackageError, match=r"missing file 'manifest.json': a package starts with manifest.json"):
        verify_package(bomb, [keys["public"]])


def test_a_member_the_signed_manifest_does_not_list_is_refused_at_its_header(package, tmp_path, keys):
    bomb = _header_only(tmp_path / "extra.tar", members(package), "model/evil.onnx", 3 * 1024**3)
    with pytest.raises(PackageError, match=r"extra file 'model/evil.onnx' \(in archive, not listed in manifest\)"):
        verify_package(bomb, [keys["public"]])


def test_a_listed_member_of_another_size_is_refused_at_its_header(package, tmp_path, keys):
    files = members(package)
    card = files.pop("MODEL_CARD.md")
    bomb = _header_only(tmp_path / "bigger.tar", files, "MODEL_CARD.md", 3 * 1024**3)
    with pytest.raises(
        PackageError,
        match=rf"manifest says sha256 [0-9a-f]{{64}} \({len(card)} bytes\), archive has "
        r"3221225472 bytes \(refused before reading it\)",
    ):
        verify_package(bomb, [keys["public"]])


def test_a_member_before_the_signature_is_refused(package, tmp_path, keys):
    files = members(package)
    reordered = {"manifest.json": files.pop("manifest.json"), "MODEL_CARD.md": files.pop("MODEL_CARD.md")} | files
    with pytest.raises(
        PackageError,
        match=r"missing file 'manifest.json.sig' \(unsigned package\): .*'MODEL_CARD.md' "
        r"came first",
    ):
        verify_package(rewrite(package, tmp_path / "late-sig.tar", reordered), [keys["public"]])

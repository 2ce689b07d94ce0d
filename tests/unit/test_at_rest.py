"""How the appliance tells whether its data folder is encrypted at rest (issue 23): the
mount table read, the dm-crypt layer found under a file system's device (LUKS directly, LVM
on LUKS, a partition of a crypt device) and not found under a plain disk. The sysfs trees
here are laid out as the kernel lays them out; the fscrypt case runs on a real encrypted
file system in tests/system/test_at_rest_start.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.at_rest import Mount, crypt_target, fscrypt_policy, inspect, mount_holding, parse_mountinfo

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
40 27 253:1 / /var/lib/appliance rw,relatime - xfs /dev/mapper/vg-data rw
41 40 0:50 / /var/lib/appliance/spool\\040tmp rw - tmpfs tmpfs rw
"""


def test_the_mount_table_is_read_with_its_escapes_and_the_deepest_mount_wins():
    mounts = parse_mountinfo(MOUNTINFO)
    assert mounts[1] == Mount("254:0", "/", "ext4", "/dev/vda")
    assert mounts[3].mount_point == "/var/lib/appliance/spool tmp"
    assert mount_holding(Path("/var/lib/appliance/spool"), mounts).device == "253:1"
    assert mount_holding(Path("/var/lib/appliance"), mounts).device == "253:1"
    assert mount_holding(Path("/var/lib/appliance/spool tmp/x"), mounts).fstype == "tmpfs"
    assert mount_holding(Path("/var/lib/appliances"), mounts).device == "254:0", "a prefix of a name is not a parent"


def block(sys_root: Path, name: str, device: str, *, dm_uuid: str | None = None, dm_name: str | None = None,
          slaves: tuple[str, ...] = (), parent: str | None = None) -> None:
    """A block device as sysfs shows it: /sys/devices/.../block/NAME (a partition inside
    its disk's folder), /sys/dev/block/MAJ:MIN linking to it, dm/ and slaves/ for a
    device-mapper target."""
    base = sys_root / "devices" / "virtual" / "block"
    node = base / parent / name if parent else base / name
    node.mkdir(parents=True)
    if parent:
        (node / "partition").write_text("1\n")
    if dm_uuid is not None:
        (node / "dm").mkdir()
        (node / "dm" / "uuid").write_text(dm_uuid + "\n")
        (node / "dm" / "name").write_text((dm_name or name) + "\n")
    (node / "slaves").mkdir()
    for slave in slaves:
        (node / "slaves" / slave).symlink_to(os.path.relpath(base / slave, node / "slaves"))
    links = sys_root / "dev" / "block"
    links.mkdir(parents=True, exist_ok=True)
    (links / device).symlink_to(os.path.relpath(node, links))


def test_luks_is_found_directly_under_lvm_and_under_a_partition(tmp_path):
    sys_root = tmp_path / "sys"
    block(sys_root, "vda", "254:0")
    block(sys_root, "vda1", "254:1", parent="vda")
    block(sys_root, "dm-0", "253:0", dm_uuid="CRYPT-LUKS2-6a1f0c2e9b8d4c1e-data_crypt", dm_name="data_crypt",
          slaves=("vda",))
    block(sys_root, "dm-1", "253:1", dm_uuid="LVM-abcdef", dm_name="vg-data", slaves=("dm-0",))
    block(sys_root, "dm-2", "253:2", dm_uuid="CRYPT-PLAIN-swap", dm_name="swap_crypt", slaves=("vda",))
    block(sys_root, "dm-3", "253:3", dm_uuid="LVM-ghijkl", dm_name="vg-plain", slaves=("vda",))
    block(sys_root, "sdb", "8:16", dm_uuid=None)
    block(sys_root, "sdb1", "8:17", parent="sdb")

    assert crypt_target("253:0", sys_root) == "dm-crypt (LUKS2, /dev/mapper/data_crypt)"
    assert crypt_target("253:1", sys_root) == "dm-crypt (LUKS2, /dev/mapper/data_crypt)", "LVM on LUKS"
    assert crypt_target("253:2", sys_root) == "dm-crypt (PLAIN, /dev/mapper/swap_crypt)"
    assert crypt_target("253:3", sys_root) is None, "LVM on a plain disk"
    assert crypt_target("254:1", sys_root) is None, "a partition of a plain disk"
    assert crypt_target("8:17", sys_root) is None
    assert crypt_target("0:50", sys_root) is None, "tmpfs has no block device"


def test_a_partition_made_on_a_crypt_device_is_encrypted(tmp_path):
    sys_root = tmp_path / "sys"
    block(sys_root, "vdb", "254:16")
    block(sys_root, "dm-4", "253:4", dm_uuid="CRYPT-LUKS1-00ff-disk", dm_name="disk", slaves=("vdb",))
    block(sys_root, "dm-4p1", "253:5", parent="dm-4")
    assert crypt_target("253:5", sys_root) == "dm-crypt (LUKS1, /dev/mapper/disk)"


def test_a_plain_scratch_folder_is_not_encrypted_and_says_where_it_is(tmp_path):
    assert fscrypt_policy(tmp_path) is False
    found = inspect(tmp_path / "not" / "made" / "yet")
    assert not found.encrypted
    assert found.path == str((tmp_path / "not" / "made" / "yet").resolve())
    words = found.words()
    assert words.startswith(f"{found.path} ({found.fstype} {found.source} at {found.mount_point}): not encrypted")
    assert "fscrypt" in words and "dm-crypt" in words


def test_the_mount_of_a_folder_is_the_one_the_kernel_reports(tmp_path):
    found = inspect(tmp_path)
    assert os.stat(found.mount_point).st_dev == os.stat(tmp_path).st_dev


@pytest.mark.parametrize("bad", ["", "27 1 254:0 / / rw\n"])
def test_lines_without_the_separator_are_skipped(bad):
    assert parse_mountinfo(bad) == []

"""Whether the data folder is encrypted at rest, checked when a long-running component starts.

The data folder holds patients' images, the index and the audit trail, so a disk carried
out of the hospital must not be readable. Two ways count:

- **fscrypt**: the data folder (or the folder it will be made in) has an encryption policy
  (ext4, f2fs and ubifs: the inode flag ``FS_ENCRYPT_FL``); everything made under it is
  encrypted with it.
- **dm-crypt** (LUKS or plain): the file system holding the folder sits on a device-mapper
  crypt target, directly or under LVM, RAID or partitions (``/sys/dev/block``: a ``dm/uuid``
  starting ``CRYPT-`` anywhere down the device's ``slaves``).

Anything else (a plain disk, tmpfs, NFS, an overlay whose lower layer cannot be seen) is
not encrypted as far as the appliance can tell. ``allow_unencrypted = true`` lets the box
run anyway: the start is logged as a warning and audited, and the health page says so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long)
FS_ENCRYPT_FL = 0x00000800


@dataclass(frozen=True)
class AtRest:
    """How the data folder is stored: the mount holding it and what encrypts it (None: nothing)."""

    path: str
    mount_point: str
    fstype: str
    source: str
    encrypted_by: str | None

    @property
    def encrypted(self) -> bool:
        return self.encrypted_by is not None

    def words(self) -> str:
        where = f"{self.path} ({self.fstype} {self.source} at {self.mount_point})"
        if self.encrypted_by:
            return f"{where}: encrypted by {self.encrypted_by}"
        return f"{where}: not encrypted (neither an fscrypt policy on the folder nor dm-crypt under its file system)"


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    device: str  # "major:minor"
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount in ``/proc/self/mountinfo`` text (pure)."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        mounts.append(
            Mount(device=fields[2], mount_point=_unescape(fields[4]), fstype=rest[0], source=_unescape(rest[1]))
        )
    return mounts


def mount_holding(path: Path, mounts: list[Mount]) -> Mount:
    """The mount ``path`` (absolute, resolved) lies in: the longest mount point above it,
    the last mounted where two share one (pure)."""
    best: Mount | None = None
    for m in mounts:
        inside = m.mount_point == "/" or path == Path(m.mount_point) or Path(m.mount_point) in path.parents
        if inside and (best is None or len(m.mount_point) >= len(best.mount_point)):
            best = m
    if best is None:
        raise ValueError(f"no mount holds {path}")
    return best


def crypt_target(device: str, sys_root: Path = Path("/sys")) -> str | None:
    """The dm-crypt mapping under block device ``major:minor``, searched down its slaves
    (LVM on LUKS, a partition of a crypt device), or None."""
    start = sys_root / "dev" / "block" / device
    if not start.exists():
        return None
    todo, seen = [start.resolve()], set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        uuid = _read(node / "dm" / "uuid")
        if uuid.startswith("CRYPT-"):
            kind = uuid.split("-")[1] if uuid.count("-") >= 2 else "plain"
            return f"dm-crypt ({kind}, /dev/mapper/{_read(node / 'dm' / 'name') or node.name})"
        slaves = node / "slaves"
        if slaves.is_dir():
            todo += [s.resolve() for s in slaves.iterdir()]
        if (node / "partition").exists():  # a partition's disk is its parent folder
            todo.append(node.parent)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def fscrypt_policy(path: Path) -> bool:
    """Whether ``path`` (a folder) carries an fscrypt encryption policy."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):  # no inode flags here (tmpfs, NFS)
            return False
        raise
    finally:
        os.close(fd)
    return bool(struct.unpack("q", flags)[0] & FS_ENCRYPT_FL)


def inspect(data_dir: Path, mountinfo: Path = Path("/proc/self/mountinfo"), sys_root: Path = Path("/sys")) -> AtRest:
    """How ``data_dir`` is stored; a folder not made yet is judged by the nearest one above
    it, which it will be made in (and inherit an fscrypt policy from)."""
    path = data_dir.resolve()
    existing = next(p for p in (path, *path.parents) if p.is_dir())
    mount = mount_holding(existing, parse_mountinfo(mountinfo.read_text()))
    if fscrypt_policy(existing):
        encrypted_by: str | None = "fscrypt (a policy on the folder)"
    else:
        encrypted_by = crypt_target(mount.device, sys_root)
    return AtRest(str(path), mount.mount_point, mount.fstype, mount.source, encrypted_by)

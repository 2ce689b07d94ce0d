"""The audit chain's anchor, kept outside the database.

The hash chain shows a row edited, removed or moved, but not a log cut short, emptied, or
edited and re-hashed from there on: each of those leaves a chain that verifies. So after
every commit that appends to the log, the head's sequence number and hash are written to
``<database>.audit-anchor`` beside the database, under an HMAC-SHA256 with the device's
audit key (``.audit-key`` in the same folder, created once, mode 0600). Whoever can edit
the database but not forge that MAC cannot move the anchor: the row it names must still
be there, with the hash it names. The anchor may lag the log (a crash between the commit
and its write), never lead it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

LOG = logging.getLogger(__name__)

ANCHOR_SUFFIX = ".audit-anchor"
KEY_NAME = ".audit-key"


def anchor_path(database: Path) -> Path:
    return database.with_name(database.name + ANCHOR_SUFFIX)


def key_path(database: Path) -> Path:
    return database.with_name(KEY_NAME)


def mac(key: bytes, seq: int, head_hash: str) -> str:
    """The anchor's MAC over the head it names (pure)."""
    return hmac.new(key, f"triage-audit-anchor/1\n{seq}\n{head_hash}".encode(), hashlib.sha256).hexdigest()


def _create_key(path: Path) -> None:
    """Write a new random key, 0600, unless another process got there first."""
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(part, path)  # atomic: the key appears whole, once
    except FileExistsError:
        pass
    finally:
        part.unlink()


def read_anchor(database: Path) -> dict | None:
    """The anchor as stored (unchecked), or ``None`` when there is none."""
    try:
        return json.loads(anchor_path(database).read_text())
    except FileNotFoundError:
        return None


def record(database: Path, seq: int, head_hash: str, hash_at: Callable[[int], str | None]) -> None:
    """Move the anchor to the head ``(seq, head_hash)`` unless it already names a later one,
    or no longer holds: a row the anchor names that is gone or hashes otherwise (the log cut
    or re-hashed), or an anchor whose MAC fails. Moving past either would sign the forged
    chain and hide the edit at the next append; the anchor stays, and verify keeps saying so.

    Called after the commit; a failure is logged, not raised: the rows are committed, and
    an anchor that lags still guards what it names.

    Parameters
    ----------
    hash_at : callable
        ``seq -> hash`` of the log's row with that sequence number, ``None`` when there is none.
    """
    try:
        key = key_path(database)
        if not key.exists():
            _create_key(key)
        with open(key, "rb") as key_file:
            fcntl.flock(key_file, fcntl.LOCK_EX)  # serialises the processes that append
            secret = key_file.read()
            current = read_anchor(database)
            if current is not None:
                held, held_hash = int(current["seq"]), str(current["hash"])
                if held >= seq:
                    return
                if not hmac.compare_digest(str(current["mac"]), mac(secret, held, held_hash)):
                    LOG.error("audit anchor kept at seq %d: it does not verify against the device key", held)
                    return
                if hash_at(held) != held_hash:
                    LOG.error(
                        "audit anchor kept at seq %d: the log no longer holds that row as anchored "
                        "(cut short or re-hashed)",
                        held,
                    )
                    return
            _write(anchor_path(database), {"seq": seq, "hash": head_hash, "mac": mac(secret, seq, head_hash)})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        LOG.warning("audit anchor not updated to seq %d: %s", seq, exc)


def _write(path: Path, anchor: dict) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w") as out:
        json.dump(anchor, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, path)


def problems(database: Path, rows: int, hash_at: Callable[[int], str | None]) -> list[tuple[int, str]]:
    """What the anchor says is wrong with the log, as ``(seq, problem)`` pairs.

    Parameters
    ----------
    rows : int
        How many rows the log holds.
    hash_at : callable
        ``seq -> hash`` of the row with that sequence number, or ``None`` when there is none.
    """
    try:
        anchor = read_anchor(database)
    except (OSError, ValueError) as exc:
        return [(0, f"audit anchor unreadable: {exc}")]
    if anchor is None:
        return [(0, f"no audit anchor beside the database, yet the log holds {rows} rows")] if rows else []
    try:
        seq, head_hash, stored_mac = int(anchor["seq"]), str(anchor["hash"]), str(anchor["mac"])
        secret = key_path(database).read_bytes()
    except (KeyError, TypeError, ValueError) as exc:
        return [(0, f"audit anchor malformed: {exc}")]
    except OSError as exc:
        return [(0, f"audit key unreadable, the anchor cannot be checked: {exc.strerror}")]
    if not hmac.compare_digest(stored_mac, mac(secret, seq, head_hash)):
        return [(seq, "audit anchor does not verify against the device key (forged or damaged)")]
    found = hash_at(seq)
    if found is None:
        return [(seq, f"rows missing: the anchor names seq {seq}, the log holds {rows} rows (truncated or deleted)")]
    if found != head_hash:
        return [(seq, "row hash differs from the anchor's (the log was rewritten and re-hashed)")]
    return []

"""Model releases from the hub: TUF metadata through python-tuf's ngclient, packages by a
download that resumes, then the appliance's own package check, ending in **shadow**.

Trust starts from the root metadata pinned at enrolment. ngclient refuses expired,
rolled-back, mixed-and-matched and unsigned metadata; :func:`refusal_reason` says which.
A package download that breaks keeps its bytes in ``*.partial`` and the next try sends
``Range: bytes=N-``; the length and SHA-256 from the signed targets metadata are checked
over the whole file at the end. A verified package then goes through
:meth:`ModelRegistry.install` and :meth:`ModelRegistry.shadow`, the functions the CLI uses
(signature, hashes, golden test): it never becomes active here; a biomed user activates.

Stale or refused metadata only stops updates: the installed models keep running.
This module is the only writer of ``sync_releases``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from appliance.db import transaction
from appliance.errors import PackageError, ReleaseRefused
from appliance.models.registry import ModelRegistry, version_key
from appliance.states import ReleaseState
from appliance.sync.client import HubError

_CUSTOM_KEYS = {"model_id", "version", "min_appliance_version", "ring"}


#: Longest a metadata file may take to arrive whole (seconds): a hub trickling bytes
#: stays under every read timeout, so the file as a whole has a deadline too.
METADATA_DEADLINE_S = 30.0


class HttpxFetcher(FetcherInterface):
    """ngclient's metadata transport over the box's own httpx client (TLS settings included).

    The body is streamed, so ngclient's length limits per role (16 KiB for timestamp.json,
    say) cut an endless one short, and a file not whole within ``deadline_s`` is given up.
    """

    def __init__(self, client: httpx.Client, deadline_s: float = METADATA_DEADLINE_S):
        self.client = client
        self.deadline_s = deadline_s

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self.client.send(self.client.build_request("GET", url), stream=True)
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(f"GET {url}: {response.status_code}", response.status_code)
        return self._chunks(url, response)

    def _chunks(self, url: str, response: httpx.Response) -> Iterator[bytes]:
        deadline = time.monotonic() + self.deadline_s
        try:
            for chunk in response.iter_bytes():  # as it arrives, so the deadline is checked
                if time.monotonic() > deadline:
                    raise tuf_errors.DownloadError(f"GET {url}: not whole within {self.deadline_s:g} s")
                yield chunk
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.close()


def refusal_reason(exc: Exception) -> str:
    """Name what was wrong with the metadata, for the operator (pure)."""
    text = str(exc)
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return f"expired metadata: {text}"
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        if "must be >=" in text or ".json version" in text:  # older than what this box trusts
            return f"rolled-back metadata: {text}"
        # timestamp and snapshot, or snapshot and targets, from different repository states
        return f"mixed-and-matched metadata: {text}"
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return f"unsigned or tampered metadata (signatures do not verify): {text}"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return f"tampered data (length or hash mismatch): {text}"
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return f"oversized metadata (cut at its length limit): {text}"
    if isinstance(exc, tuf_errors.DownloadError):
        return f"hub unreachable: {text}"
    return f"metadata refused: {type(exc).__name__}: {text}"


def download(client: httpx.Client, url: str, info: TargetFile, destination: Path, attempts: int) -> Path:
    """Fetch a target into ``destination``, resuming a broken transfer with ``Range:``;
    verify length and hashes over the whole file at the end.

    Raises
    ------
    ReleaseRefused
        The complete file does not match the signed length or hashes (it is discarded).
    HubError
        Every try broke; the bytes so far stay in ``*.partial`` for the next round.
    """
    partial = destination.with_name(destination.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    last_error = "no try made"
    for _ in range(attempts):
        have = partial.stat().st_size if partial.exists() else 0
        if have > info.length:
            partial.unlink()
            have = 0
        if have < info.length:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 200:
                        mode = "wb"  # the server sent the whole file: start over
                    elif response.status_code == 206 and response.headers.get("content-range", "").startswith(
                        f"bytes {have}-"
                    ):
                        mode = "ab"
                    else:
                        raise HubError(f"GET {url}: unexpected {response.status_code}", True)
                    with open(partial, mode) as stream:
                        for chunk in response.iter_bytes(1 << 16):
                            stream.write(chunk)
                            if stream.tell() > info.length:
                                break
                        stream.flush()
                        os.fsync(stream.fileno())
            except (httpx.TransportError, HubError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                continue
        if partial.stat().st_size < info.length:
            last_error = f"transfer ended at {partial.stat().st_size} of {info.length} bytes"
            continue
        try:
            with open(partial, "rb") as stream:
                info.verify_length_and_hashes(stream)
        except tuf_errors.LengthOrHashMismatchError as exc:
            partial.unlink()
            raise ReleaseRefused(f"{info.path}: {refusal_reason(exc)}") from exc
        os.replace(partial, destination)
        return destination
    kept = partial.stat().st_size if partial.exists() else 0
    raise HubError(
        f"{info.path}: download broke {attempts} times ({last_error}); {kept} bytes kept, the next round resumes", True
    )


@dataclass(frozen=True)
class Candidate:
    path: str
    model_id: str
    version: str


def choose(
    targets: dict[str, dict], installed: dict[str, list[str]], ring: str, appliance_version: str, refused: set[str]
) -> list[Candidate]:
    """Which targets to stage (pure): for each model id, the newest version that is newer
    than anything installed, meant for this ring and this appliance version, and not
    refused before. ``targets`` maps target path to its custom fields."""
    best: dict[str, Candidate] = {}
    for path, custom in targets.items():
        if not isinstance(custom, dict) or set(custom) != _CUSTOM_KEYS or path in refused:
            continue
        if custom["ring"] not in ("all", ring):
            continue
        try:
            if version_key(custom["min_appliance_version"]) > version_key(appliance_version):
                continue
            newest = max(installed.get(custom["model_id"], []), key=version_key, default=None)
            if newest is not None and version_key(custom["version"]) <= version_key(newest):
                continue
            current = best.get(custom["model_id"])
            if current is None or version_key(custom["version"]) > version_key(current.version):
                best[custom["model_id"]] = Candidate(path, custom["model_id"], custom["version"])
        except PackageError:  # a version that is not semantic: not for us
            continue
    return sorted(best.values(), key=lambda c: c.model_id)


@dataclass
class ReleaseRound:
    refreshed: bool
    staged: list[str]
    error: str | None


def _record(
    conn: sqlite3.Connection, info: TargetFile, candidate: Candidate, state: ReleaseState, reason: str | None
) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO sync_releases (target, sha256, model_id, version, state, reason, at) "
            "VALUES (?,?,?,?,?,?,?)",
            (info.path, info.hashes["sha256"], candidate.model_id, candidate.version, state, reason, time.time()),
        )


def refresh_and_stage(
    conn: sqlite3.Connection,
    registry: ModelRegistry,
    client: httpx.Client,
    sync_dir: Path,
    pinned_root: bytes,
    ring: str,
    appliance_version: str,
    download_attempts: int,
    retry_refused_s: float,
) -> ReleaseRound:
    """Refresh the TUF metadata and stage every release meant for this box in shadow.

    A package the appliance's check refused is not fetched again for ``retry_refused_s``
    (a fixed trusted-key setting gets it in at the latest then)."""
    metadata_dir = sync_dir / "tuf"
    downloads = sync_dir / "downloads"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    base = str(client.base_url).rstrip("/")
    updater = Updater(
        str(metadata_dir),
        f"{base}/tuf/metadata/",
        str(downloads),
        f"{base}/tuf/targets/",
        fetcher=HttpxFetcher(client),
        bootstrap=pinned_root,
    )
    try:
        updater.refresh()
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
        if isinstance(exc, tuf_errors.DownloadError) and not isinstance(exc, tuf_errors.DownloadLengthMismatchError):
            raise HubError(refusal_reason(exc), True) from exc
        raise ReleaseRefused(f"release metadata refused, updates blocked: {refusal_reason(exc)}") from exc
    listed = Metadata[Targets].from_bytes((metadata_dir / "targets.json").read_bytes()).signed.targets
    refused = {
        path
        for (path,) in conn.execute(
            "SELECT target FROM sync_releases WHERE state = ? AND at > ?",
            (ReleaseState.REFUSED, time.time() - retry_refused_s),
        )
    }
    installed: dict[str, list[str]] = {}
    for model in registry.models():
        installed.setdefault(model.id, []).append(model.version)
    staged, errors = [], []
    for candidate in choose({p: t.custom for p, t in listed.items()}, installed, ring, appliance_version, refused):
        info = updater.get_targetinfo(candidate.path)
        if info is None:
            continue
        destination = downloads / info.path
        try:
            package = download(client, f"{base}/tuf/targets/{info.path}", info, destination, download_attempts)
        except ReleaseRefused as exc:
            errors.append(str(exc))
            continue
        try:
            model = registry.install(package, "sync")
            model = registry.shadow(model.id, model.version, "sync")
        except PackageError as exc:
            _record(conn, info, candidate, ReleaseState.REFUSED, str(exc))
            errors.append(f"{info.path}: refused by the package check: {exc}")
            continue
        finally:
            package.unlink(missing_ok=True)
        _record(conn, info, candidate, ReleaseState.SHADOW, None)
        staged.append(model.label)
    return ReleaseRound(True, staged, "; ".join(errors) or None)


def metadata_state(sync_dir: Path, now: float | None = None) -> dict:
    """The trusted timestamp's version and expiry, for ``appliance sync status``."""
    path = sync_dir / "tuf" / "timestamp.json"
    if not path.exists():
        return {"timestamp_version": None, "expires": None, "expired": None}
    signed = Metadata.from_bytes(path.read_bytes()).signed
    now = time.time() if now is None else now
    return {
        "timestamp_version": signed.version,
        "expires": signed.expires.isoformat(),
        "expired": signed.expires.timestamp() < now,
    }

"""Real servers on free loopback ports, shared by the tests and the benchmarks.

Nothing here is a stand-in: each helper starts the real program (the appliance's CLI,
Orthanc from Debian) or talks to a real socket, and every wait polls a condition until a
generous deadline (:data:`READY_TIMEOUT_S`) instead of assuming something happens within
a few milliseconds: the suite runs on loaded 2-core machines.

- :func:`free_port`, :func:`wait_for_port`, :func:`wait_until`
- :func:`tcp_env`: the environment for dcmtk tools and Orthanc (TCP_NODELAY=1)
- :func:`start_process` / :func:`stop_process`: a child that logs to a file and is ready
  when a given line appears; SIGTERM, then SIGKILL
- :class:`ApplianceProcess`: ``appliance listener`` (or ``serve``) as a child process
- :class:`Orthanc`: a real Orthanc as the PACS, with REST helpers
- :data:`SHARED_ANCHORS`: ``../shared/anchors`` next to the repository

Imported as ``scripts.harness`` (the repository root on ``sys.path``); ``tests/support.py``
and ``tests/orthanc.py`` re-export what the tests use.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED_ANCHORS = REPO.parent / "shared" / "anchors"
#: How long any start or wait may take before it counts as failed (seconds).
READY_TIMEOUT_S = 60.0


def _ports_outside_the_ephemeral_range() -> list[int]:
    """Ports the kernel never picks as the local end of an outgoing connection."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    below = list(range(max(1024, low - 12000), low))
    return below if len(below) >= 1000 else list(range(high + 1, 65536))


_PORTS = _ports_outside_the_ephemeral_range()
_PORT_CURSOR = [random.randrange(len(_PORTS))]


def free_port() -> int:
    """A loopback TCP port nothing is bound to right now, and that no outgoing connection
    can take before a server binds it.

    A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, so a client's
    connection (even one retrying against that very port, which can connect to itself) may
    hold it when the server starts. Ports below that range are never used that way; each
    call in a process returns a different one.
    """
    for _ in range(len(_PORTS)):
        port = _PORTS[_PORT_CURSOR[0] % len(_PORTS)]
        _PORT_CURSOR[0] += 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def tcp_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for dcmtk tools (and Orthanc, which embeds DCMTK): Nagle off, or
    loopback transfers crawl; and a PATH without this interpreter's own ``bin``, where
    pynetdicom installs apps of dcmtk's names (``echoscu``, ``storescu``) with other
    options: a shell with the virtual environment activated would run those."""
    env = dict(os.environ if base is None else base)
    own = os.path.realpath(os.path.join(sys.prefix, "bin"))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", os.defpath).split(os.pathsep)
                                  if p and os.path.realpath(p) != own)
    return {**env, "TCP_NODELAY": "1"}


def storescu(port: int, folder: Path, calling_ae: str, *options: str) -> subprocess.CompletedProcess:
    """dcmtk's ``storescu`` sending every file in ``folder`` to ``TRIAGE`` on this host in
    one association (TCP_NODELAY=1, see :func:`tcp_env`); its output captured as text, its
    exit status left to the caller."""
    return subprocess.run(
        ["storescu", *options, "-aet", calling_ae, "-aec", "TRIAGE", "+sd", "127.0.0.1", str(port), str(folder)],
        env=tcp_env(), capture_output=True, text=True,
    )


def wait_until(condition: Callable[[], Any], timeout: float = READY_TIMEOUT_S, what: str = "",
               interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something true (returned) or ``timeout`` passes
    (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until something accepts TCP connections on the loopback ``port``."""

    def accepts() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(accepts, timeout, f"a server on port {port}", interval=0.1)


def start_process(argv: list[str], log: Path, ready: bytes, env: dict[str, str] | None = None,
                  cwd: Path = REPO, timeout: float = READY_TIMEOUT_S) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``log``; return once ``ready``
    appears in the log. Raises RuntimeError (with the log's tail) when the process exits
    first or ``timeout`` passes (the process is killed then)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while ready not in log.read_bytes():
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{argv[0]} not ready after {timeout:g} s: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def stop_process(process: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. True when it stopped on SIGTERM
    (or had already exited)."""
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


class ApplianceProcess:
    """``appliance listener`` (or ``serve``: set :attr:`command`) as a real child process
    on a free loopback port; ``settings`` become ``APPLIANCE_<KEY>`` variables."""

    def __init__(self, data_dir: Path, port: int | None = None, **settings: str):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(data_dir),
            "APPLIANCE_DICOM_PORT": str(self.port),
            "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1",
            "APPLIANCE_DICOM_PEERS": "*@127.0.0.1",
            "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "16",
            # `serve` also starts the web server: keep it off 8080 and off the network.
            "APPLIANCE_WEB_PORT": str(free_port()),
            "APPLIANCE_WEB_BIND_ADDRESS": "127.0.0.1",
            # A test or benchmark rig's scratch folder is not on an encrypted volume.
            "APPLIANCE_ALLOW_UNENCRYPTED": "true",
            **{f"APPLIANCE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.process: subprocess.Popen | None = None
        self.command = "listener"  # or "serve": listener and web, the worker in a child process
        self.log = data_dir.parent / f"listener-{self.port}.log"

    def start(self, timeout: float = READY_TIMEOUT_S) -> "ApplianceProcess":
        """Start and wait for the "listening as" line."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)
        self.process = start_process([sys.executable, "-m", "appliance.cli", self.command],
                                     self.log, b"listening as", self.env, REPO, timeout)
        return self

    def stop(self) -> None:
        """SIGTERM; an appliance that needs SIGKILL to stop is an error."""
        if self.process and not stop_process(self.process):
            raise RuntimeError(f"appliance {self.command} ignored SIGTERM: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=READY_TIMEOUT_S)

    def status(self) -> dict:
        """``appliance status --json``."""
        out = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "status", "--json"],
            env=self.env, cwd=REPO, capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout)


class Orthanc:
    """One Orthanc process on free loopback ports in ``folder``.

    Parameters
    ----------
    folder : Path
        Created if missing; holds the configuration, storage, index and log.
    ae_title : str
        Orthanc's own AE title.
    modalities : dict, optional
        ``{name: (ae_title, host, port)}`` known to Orthanc from the start.
    config : dict, optional
        Extra Orthanc configuration options, applied last.
    """

    def __init__(self, folder: Path, ae_title: str = "ORTHANC",
                 modalities: dict[str, tuple[str, str, int]] | None = None,
                 config: dict[str, Any] | None = None):
        self.folder = folder
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = {
            "Name": "test-pacs",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(m) for name, m in (modalities or {}).items()},
            "DicomScuTimeout": 10,
            "SaveJobs": False,
            "HttpTimeout": 30,
            **(config or {}),
        }
        self.log = folder / "orthanc.log"
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def destination(self) -> str:
        """This Orthanc as an appliance destination: ``AE@127.0.0.1:port``."""
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Orthanc":
        """Start Orthanc and wait until its REST API answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(self.config, indent=2))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["Orthanc", str(config_path)], cwd=self.folder, stdout=log,
                stderr=subprocess.STDOUT, env=tcp_env(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get("/system").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 60 s)."""
        if self.process is not None:
            stop_process(self.process)
        self.http.close()

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST helpers -------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Register (or update) a DICOM modality Orthanc can send to and accept from."""
        self._json("PUT", f"/modalities/{name}",
                   json={"AET": ae_title, "Host": host, "Port": port})

    def upload(self, path: Path) -> str:
        """Store a DICOM file through REST (no DICOM association); returns its Orthanc id."""
        return self._json("POST", "/instances", content=path.read_bytes())["ID"]

    def lookup(self, uid: str, kind: str) -> str | None:
        """Orthanc id of the resource with this DICOM UID; ``kind`` is Study, Series or
        Instance."""
        for hit in self._json("POST", "/tools/lookup", content=uid):
            if hit["Type"] == kind:
                return hit["ID"]
        return None

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of a study, expanded (``ID``, ``MainDicomTags``, ``ParentSeries``
        ...); empty when Orthanc does not have the study."""
        study = self.lookup(study_uid, "Study")
        return [] if study is None else self._json("GET", f"/studies/{study}/instances")

    def find_instance(self, sop_instance_uid: str) -> dict[str, Any] | None:
        """The expanded instance with this SOP Instance UID, or None."""
        instance = self.lookup(sop_instance_uid, "Instance")
        return None if instance is None else self._json("GET", f"/instances/{instance}")

    def instance_metadata(self, instance_id: str) -> dict[str, str]:
        """How an instance arrived: ``TransferSyntax``, ``RemoteAET``, ``SopClassUid``..."""
        return self._json("GET", f"/instances/{instance_id}/metadata", params={"expand": ""})

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file."""
        response = self.http.get(f"/instances/{instance_id}/file")
        response.raise_for_status()
        return response.content

    def store(self, modality: str, resources: list[str]) -> dict[str, Any]:
        """C-STORE Orthanc resources (ids of patients, studies, series or instances) to a
        modality, synchronously; raises on failure."""
        return self._json("POST", f"/modalities/{modality}/store",
                          json={"Resources": resources, "Synchronous": True})

    def store_study(self, modality: str, study_uid: str) -> dict[str, Any]:
        """C-STORE a whole study (by Study Instance UID) to a modality."""
        study = self.lookup(study_uid, "Study")
        if study is None:
            raise KeyError("Orthanc has no such study")
        return self.store(modality, [study])

    def wait_for_instances(self, study_uid: str, count: int, timeout: float = READY_TIMEOUT_S,
                           ) -> list[dict[str, Any]]:
        """Poll until the study holds at least ``count`` instances; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.instances_of_study(study_uid)
            if len(found) >= count or time.monotonic() > deadline:
                if len(found) < count:
                    raise AssertionError(f"{len(found)} of {count} instances after {timeout} s")
                return found
            time.sleep(0.1)

"""Hostile load on the shared resources of `appliance serve` (the DICOM listener and the
web server in one process): slow web sockets under systemd's default open-file limit, a
flood of /readyz, DICOM and web side by side, and a database another process locks."""

from __future__ import annotations

import resource
import selectors
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from scripts.harness import REPO, ApplianceProcess, start_process, stop_process, tcp_env, wait_for_port
from tests.helpers.dimse import echoscu, fresh, store
from tests.helpers.hostile import case
from tests.helpers.series import write_ct_series

SLOW_SOCKETS = 1100
DROP_DEADLINE_S = 35.0  # a deadline for failing: a header deadline of 20 s or less drops them well within it


def serve_process(data_dir, nofile: int | None = None, **settings: str) -> ApplianceProcess:
    """`appliance serve` (listener and web, the worker in a child), optionally under an
    open-file limit."""
    process = ApplianceProcess(data_dir, **settings)
    process.command = "serve"
    data_dir.mkdir(parents=True, exist_ok=True)
    prefix = ["prlimit", f"--nofile={nofile}"] if nofile else []
    process.process = start_process([*prefix, sys.executable, "-m", "appliance.cli", "serve"], process.log,
                                    b"listening as", process.env, REPO)
    wait_for_port(int(process.env["APPLIANCE_WEB_PORT"]))  # the web server starts after the listener
    return process


def web_url(process: ApplianceProcess) -> str:
    return f"http://127.0.0.1:{process.env['APPLIANCE_WEB_PORT']}"


def instance_count(process: ApplianceProcess) -> int:
    with sqlite3.connect(process.data_dir / "appliance.db") as db:
        return db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]


@pytest.fixture(scope="module")
def slowloris(tmp_path_factory):
    """1100 web connections that trickle a request header and never finish it, against
    `serve` with NOFILE 1024 (systemd's default). What happened, for the tests below; the
    process and the sockets are gone when they read it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    process = serve_process(tmp_path_factory.mktemp("slowloris") / "data", nofile=1024)
    port = int(process.env["APPLIANCE_WEB_PORT"])
    log_before = process.log.stat().st_size
    sockets: list[socket.socket] = []
    stop = threading.Event()
    facts: dict = {}
    try:
        for _ in range(SLOW_SOCKETS):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                sockets.append(sock)
            except OSError:
                break  # refused or reset: the server keeps its descriptors
        facts["opened"] = len(sockets)

        def trickle() -> None:
            while not stop.wait(2.0):
                for sock in sockets:
                    try:
                        sock.send(b"X")
                    except OSError:
                        pass

        threading.Thread(target=trickle, daemon=True).start()
        try:
            # From another host, as a monitor is: the attacker's own address is capped.
            monitor = httpx.HTTPTransport(local_address="127.0.0.9")
            with httpx.Client(transport=monitor, timeout=10) as client:
                facts["healthz"] = client.get(f"http://127.0.0.1:{port}/healthz").status_code
        except httpx.HTTPError as exc:
            facts["healthz"] = repr(exc)
        # From another process, as a monitor's is: this one holds the 1,100 sockets, and
        # pynetdicom here would abort its own association (select() stops at descriptor 1023).
        facts["dicom_echo"] = echoscu(process.port)
        facts["dropped"] = _dropped_within(sockets, DROP_DEADLINE_S)
        facts["log_growth"] = process.log.stat().st_size - log_before
    finally:  # over before the tests read the facts: nothing of it weighs on the next module
        stop.set()
        for sock in sockets:
            sock.close()
        stop_process(process.process)
    return facts


def _dropped_within(sockets: list[socket.socket], deadline_s: float) -> int:
    """How many of ``sockets`` the server closed (EOF or reset) before the deadline."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    dropped, open_ = 0, len(sockets)
    end = time.monotonic() + deadline_s
    while open_ and time.monotonic() < end:
        for key, _ in selector.select(timeout=1.0):
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                dropped, open_ = dropped + 1, open_ - 1
    selector.close()
    return dropped


@case("S1-web-slowloris")
def test_slow_web_sockets_are_dropped(slowloris, case_id):
    assert slowloris["opened"] - slowloris["dropped"] <= 64, slowloris


@case("S1-web-slowloris-nofile1024")
def test_health_and_dicom_work_while_web_sockets_trickle(slowloris, case_id):
    assert slowloris["healthz"] == 200 and slowloris["dicom_echo"] is True, slowloris


@case("S1b-log-flood")
def test_trickling_web_sockets_do_not_flood_the_log(slowloris, case_id):
    assert slowloris["log_growth"] < 1024 * 1024, slowloris


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    process = serve_process(tmp_path_factory.mktemp("serve") / "data")
    yield process
    assert stop_process(process.process)


def _stores(port: int, count: int) -> list[int]:
    """``count`` C-STOREs on one association (one slot, no race with the listener noticing
    that an earlier association ended)."""
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established, (assoc.is_rejected, assoc.is_aborted)
    statuses = [store(assoc, fresh())[0] for _ in range(count)]
    assoc.release()
    return statuses


@case("S4-readyz-flood")
def test_dicom_is_served_while_readyz_is_flooded(serve, case_id):
    url = web_url(serve)
    flooding = threading.Event()
    answers: list[int] = []

    def flood() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not flooding.is_set():
                answers.append(client.get("/readyz").status_code)

    before = instance_count(serve)
    with ThreadPoolExecutor(16) as pool:
        floods = [pool.submit(flood) for _ in range(16)]
        try:
            statuses = _stores(serve.port, 20)
        finally:
            flooding.set()
        for done in floods:
            done.result()
    assert statuses == [0x0000] * 20
    assert len(answers) >= 16 and set(answers) <= {200, 503}, set(answers)
    assert instance_count(serve) == before + 20


@case("S5-dicom-vs-web")
def test_the_web_answers_while_dicom_stores_stream(serve, tmp_path, case_id):
    folders = [tmp_path / f"s{i}" for i in range(4)]
    files = [write_ct_series(folder, 50, size=64) for folder in folders]
    before = instance_count(serve)
    senders = [subprocess.Popen(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(serve.port), *map(str, batch)],
                                env=tcp_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for batch in files]
    answers = []
    with httpx.Client(base_url=web_url(serve), timeout=60) as client:
        while any(sender.poll() is None for sender in senders):
            answers += [client.get("/healthz").status_code, client.get("/login").status_code]
    assert [sender.wait(timeout=120) for sender in senders] == [0, 0, 0, 0]
    assert answers and set(answers) == {200}
    assert instance_count(serve) == before + 200


@case("R5-sqlite-locked")
def test_a_store_against_a_locked_database_is_answered_in_time(listener, case_id):
    """Another process holds the write lock: the store is answered with a status the sender
    retries on (0xA7xx) well inside the sender's DIMSE timeout, instead of after SQLite's
    30 s busy wait, and leaves no file that no row names."""
    holder = sqlite3.connect(listener.data_dir / "appliance.db", isolation_level=None)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = 20  # a sender's patience; the lock lasts longer
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="TRIAGE")
    assert assoc.is_established
    holder.execute("BEGIN EXCLUSIVE")
    try:
        response = assoc.send_c_store(fresh())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    if assoc.is_established:
        assoc.release()
    assert "Status" in response and 0xA700 <= response.Status <= 0xA7FF, response
    assert not list((listener.data_dir / "spool").rglob("*.dcm"))

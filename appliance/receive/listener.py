"""The DICOM listener: accepts associations, stores what they carry, completes series.

:class:`Listener` owns the listening socket, one thread per association
(:class:`~appliance.receive.association.AssociationSession`) and the completion thread;
``appliance listener`` runs it until SIGTERM.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable

from appliance.config import Settings, TlsSettings, check_private_key
from appliance.db import open_database
from appliance.errors import ConfigError
from appliance.jobs import SeriesFacts
from appliance.receive import spool
from appliance.receive.association import AssociationSession
from appliance.receive.completion import run_completion
from appliance.receive.gate import ConnectionGate, Ticket, preferred_addresses
from appliance.receive.index import IngestIndex
from appliance.receive.rejector import Rejector
from appliance.receive.store import StoreService

LOG = logging.getLogger(__name__)

#: How often the accept loop looks at the stop flag when nothing happens.
ACCEPT_POLL_S = 1.0
#: Longest a refused connection may take to send the request its rejection answers.
REJECT_WAIT_S = 5.0
REFUSAL_LOG_INTERVAL_S = 10.0


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, client certificates required when configured."""
    if tls.certificate is None or tls.private_key is None:
        raise ConfigError("dicom.tls.certificate and dicom.tls.private_key are required when TLS is enabled")
    check_private_key(tls.private_key, "dicom.tls.private_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
        if tls.ca_certificates is not None:
            context.load_verify_locations(tls.ca_certificates)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"dicom.tls: cannot load certificates: {exc}") from None
    if tls.require_client_certificate:
        if tls.ca_certificates is None:
            raise ConfigError("dicom.tls.ca_certificates is required to check client certificates")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Listener:
    """The running listener."""

    def __init__(self, settings: Settings, priority: Callable[[SeriesFacts], int] = lambda facts: 0):
        """``priority(facts)`` ranks the jobs of completed series (the routing table's
        priority rules, wired by :class:`appliance.parts.Parts`)."""
        self.settings = settings
        self.db = open_database(settings.db_path)
        # A store answers 0xA700 (send again) after this wait for a locked database, well
        # inside a sender's DIMSE timeout (pynetdicom's default is 30 s), not after 30 s.
        self.db.conn.execute(f"PRAGMA busy_timeout = {round(settings.dicom.database_wait_s * 1000)}")
        self.index = IngestIndex(self.db)
        self.service = StoreService(settings.dicom, self.index, settings.spool_dir)
        self._ssl = tls_context(settings.dicom.tls) if settings.dicom.tls.enabled else None
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self._sessions: set[socket.socket] = set()
        self._admitted = 0
        self._lock = threading.Lock()
        dicom = settings.dicom
        self._gate = ConnectionGate(
            dicom.max_pending_connections, dicom.max_pending_per_address, preferred_addresses(dicom.peers)
        )
        self._refused, self._refusal_logged_at = 0, float("-inf")
        self._threads = [
            threading.Thread(target=self._accept_loop, name="dicom-accept", daemon=True),
            threading.Thread(
                target=run_completion,
                name="completion",
                daemon=True,
                args=(settings.dicom, self.index, self.service.tracker, priority, self._stop),
            ),
        ]

    @property
    def port(self) -> int:
        assert self._socket is not None
        return self._socket.getsockname()[1]

    def start(self) -> None:
        dicom = self.settings.dicom
        incoming = spool.incoming_dir(self.settings.spool_dir)
        for leftover in incoming.iterdir():  # never acknowledged: the sender will resend
            leftover.unlink()
        self._socket = socket.create_server((dicom.bind_address, dicom.port), backlog=64, reuse_port=False)
        for thread in self._threads:
            thread.start()
        LOG.info(
            "listening as %s on %s:%d%s",
            dicom.ae_title,
            dicom.bind_address,
            self.port,
            " (TLS)" if self._ssl else "",
        )

    # Associations ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        """Accept connections and answer refused ones, in one thread (selector loop)."""
        assert self._socket is not None
        self._socket.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self._socket, selectors.EVENT_READ, None)
        rejector = Rejector(selector, min(self.settings.dicom.acse_timeout_s, REJECT_WAIT_S))
        try:
            while not self._stop.is_set():
                wait = rejector.expire(time.monotonic())
                for key, _ in selector.select(ACCEPT_POLL_S if wait is None else min(wait, ACCEPT_POLL_S)):
                    if key.data is None:
                        self._accept_one(rejector)
                    else:
                        key.data.on_readable(key.fileobj)
        finally:
            rejector.close_all()
            selector.close()

    def _accept_one(self, rejector: Rejector) -> None:
        assert self._socket is not None
        try:
            conn, (address, _port, *_) = self._socket.accept()
        except BlockingIOError:
            return
        except OSError:
            if not self._stop.is_set():
                LOG.exception("accept failed")
            return
        accepted_at = time.monotonic()
        ticket = self._gate.enter(address)
        if isinstance(ticket, str):
            self._refused_connection(ticket)
            if self._ssl is None:
                rejector.add(conn, accepted_at)  # an A-ASSOCIATE-RJ once its request is in
            else:
                conn.close()  # no TLS session for strangers: nothing can be said to them
            return
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sessions.add(conn)
        threading.Thread(
            target=self._serve, args=(conn, address, ticket, accepted_at), name=f"assoc-{address}", daemon=True
        ).start()

    def _refused_connection(self, reason: str) -> None:
        """Log refusals at most once per interval: a flood must not flood the log."""
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            LOG.warning("refused %d connection(s) before negotiation; latest: %s", self._refused, reason)
            self._refused, self._refusal_logged_at = 0, now

    def _serve(self, conn: socket.socket, address: str, ticket: Ticket, accepted_at: float) -> None:
        admitted = [False]

        def admit() -> bool:
            ticket.release()  # associated (or about to be refused): no longer pending
            with self._lock:
                if self._admitted >= self.settings.dicom.max_associations:
                    return False
                self._admitted += 1
                admitted[0] = True
                return True

        deadline = accepted_at + self.settings.dicom.acse_timeout_s
        try:
            sock: socket.socket | None = conn
            if self._ssl is not None:
                sock = self._wrap_tls(conn, address, deadline)
            if sock is None:
                return
            AssociationSession(sock, address, self.settings.dicom, self.service, admit, deadline).run()
        except Exception:
            LOG.exception("association from %s failed", address)
        finally:
            ticket.release()
            with self._lock:
                self._sessions.discard(conn)
                if admitted[0]:
                    self._admitted -= 1
            conn.close()

    def _wrap_tls(self, conn: socket.socket, address: str, deadline: float) -> ssl.SSLSocket | None:
        """The server side of the handshake; the whole handshake is bounded by ``deadline``
        (CPython applies a socket timeout to the handshake as a whole, not per read)."""
        assert self._ssl is not None
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            return self._ssl.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.service.audit_rejection("", "", address, f"TLS handshake failed: {exc}")
            return None

    # Stopping -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._socket.close()
        with self._lock:
            sessions = list(self._sessions)
        for conn in sessions:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)
        self.db.conn.close()

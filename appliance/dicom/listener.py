"""The DICOM listener: C-ECHO and C-STORE SCP, durable spool, series completion.

:class:`Listener` owns one pynetdicom server and one completion thread; ``appliance
listener`` runs it until SIGTERM.
"""

from __future__ import annotations

import logging
import ssl
import threading

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config
from pynetdicom.sop_class import Verification

from appliance.audit.db import open_database
from appliance.config import Settings, TlsSettings
from appliance.dicom import spool
from appliance.dicom.handlers import StoreService
from appliance.dicom.index import IngestIndex
from appliance.dicom.transport import install_receive_path
from appliance.errors import ConfigError

LOG = logging.getLogger(__name__)

ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
COMPLETION_POLL_S = 0.1


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, client certificates required when configured."""
    if tls.certificate is None or tls.private_key is None:
        raise ConfigError("dicom.tls.certificate and dicom.tls.private_key are required when TLS is enabled")
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


def build_ae(settings: Settings) -> AE:
    """The application entity with our identity, limits and presentation contexts."""
    dicom = settings.dicom
    ae = AE(ae_title=dicom.ae_title)
    ae.maximum_associations = dicom.max_associations
    ae.acse_timeout = dicom.acse_timeout_s
    ae.dimse_timeout = dicom.dimse_timeout_s
    ae.network_timeout = dicom.network_timeout_s
    ae.maximum_pdu_size = dicom.max_pdu_bytes
    ae.add_supported_context(Verification, ACCEPTED_TRANSFER_SYNTAXES[:3])
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
    # Private and future storage SOP classes are stored too.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    return ae


class Listener:
    """The running listener: server thread(s) plus the completion loop."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = open_database(settings.db_path)
        self.index = IngestIndex(self.db)
        self.service = StoreService(settings.dicom, self.index, settings.spool_dir)
        self._stop = threading.Event()
        self._server = None
        self._completion = threading.Thread(target=self._complete_loop, name="completion", daemon=True)

    def start(self) -> None:
        dicom = self.settings.dicom
        incoming = spool.incoming_dir(self.settings.spool_dir)
        for leftover in incoming.iterdir():  # never acknowledged: the sender will resend
            leftover.unlink()
        install_receive_path(incoming, dicom.min_free_disk_mb * 1024 * 1024)
        ssl_context = tls_context(dicom.tls) if dicom.tls.enabled else None
        ae = build_ae(self.settings)
        self._server = ae.start_server(
            (dicom.bind_address, dicom.port),
            block=False,
            evt_handlers=self.service.handlers(),
            ssl_context=ssl_context,
        )
        self._completion.start()
        LOG.info(
            "listening as %s on %s:%d%s", dicom.ae_title, dicom.bind_address, dicom.port,
            " (TLS)" if ssl_context else "",
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def _complete_loop(self) -> None:
        dicom = self.settings.dicom
        while not self._stop.wait(COMPLETION_POLL_S):
            try:
                queued = self.index.queue_complete_series(
                    dicom.quiet_period_s, dicom.release_grace_s, self.service.tracker.still_sending()
                )
            except Exception:
                LOG.exception("series completion check failed; retrying")
                continue
            if queued:
                LOG.info("queued %d series for triage", len(queued))

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._completion.is_alive():
            self._completion.join()
        self.db.conn.close()

    def request_stop(self, *_: object) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler)."""
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

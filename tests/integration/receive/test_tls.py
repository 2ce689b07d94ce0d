"""DICOM over TLS 1.2+, with client certificates required when configured."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from scripts.harness import READY_TIMEOUT_S, ApplianceProcess
from tests.helpers.series import ct_dataset


def _issue(subject: str, issuer_key, issuer_name, ca: bool, folder: Path, name: str, san=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / f"{name}.key").chmod(0o600)  # the listener refuses a key others can read
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca = _issue("Hospital CA", None, None, True, folder, "ca")
    import ipaddress

    _issue("appliance", ca_key, ca.subject, False, folder, "server",
           san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    _issue("modality", ca_key, ca.subject, False, folder, "client")
    return folder


def client_context(pki: Path, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    return context


@pytest.fixture
def tls_appliance(pki, tmp_path):
    process = ApplianceProcess(
        tmp_path / "data",
        dicom_tls_enabled="true",
        dicom_tls_certificate=str(pki / "server.pem"),
        dicom_tls_private_key=str(pki / "server.key"),
        dicom_tls_ca_certificates=str(pki / "ca.pem"),
        dicom_tls_require_client_certificate="true",
    ).start()
    yield process
    process.stop()


def associate(port: int, context: ssl.SSLContext):
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = READY_TIMEOUT_S  # generous: a loaded machine is slow
    return ae.associate("127.0.0.1", port, ae_title="TRIAGE", tls_args=(context, "127.0.0.1"))


def test_a_client_with_a_certificate_echoes_and_stores_over_tls(tls_appliance, pki):
    assoc = associate(tls_appliance.port, client_context(pki, with_certificate=True))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assert assoc.send_c_store(ct_dataset(generate_uid(), generate_uid(), 0)).Status == 0
    assoc.release()
    assert tls_appliance.status()["instances_received"] == 1


def test_a_client_without_a_certificate_is_refused(tls_appliance, pki):
    assoc = associate(tls_appliance.port, client_context(pki, with_certificate=False))
    assert not assoc.is_established
    assert tls_appliance.status()["instances_received"] == 0

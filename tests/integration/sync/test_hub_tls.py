"""Mutual TLS where a site wants it: the hub requires a client certificate from its boxes'
CA; a box with one enrols and syncs, a box without one never reaches the hub."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.db import open_database
from appliance.sync.client import HubError
from appliance.sync.report_queue import enqueue_report
from appliance.parts import Parts
from appliance.sync.round import enrol, run_round
from tests.helpers.hub import REPO, HubProcess, box_settings, make_report, wait_for


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(folder: Path, name: str, ca=None, server: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(ca[1].subject if ca else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30)))
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    elif server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    certificate = builder.sign(ca[0] if ca else key, hashes.SHA256())
    (folder / f"{name}.key").write_bytes(_pem_key(key))
    (folder / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


class TlsHub(HubProcess):
    def __init__(self, data_dir: Path, pki: Path):
        super().__init__(data_dir, None)
        self.url = f"https://127.0.0.1:{self.port}"
        self.pki = pki

    def start(self) -> "TlsHub":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "training.hub", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--refresh-interval-s", "0", "--tls-certificate", str(self.pki / "hub.crt"),
             "--tls-private-key", str(self.pki / "hub.key"), "--tls-client-ca", str(self.pki / "boxes-ca.crt")],
            cwd=REPO, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        context = ssl.create_default_context(cafile=str(self.pki / "hub-ca.crt"))
        context.load_cert_chain(str(self.pki / "box.crt"), str(self.pki / "box.key"))

        def up() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                return httpx.get(f"{self.url}/healthz", verify=context, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what="the TLS hub")
        return self


@pytest.fixture
def tls_hub(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    hub_ca = _issue(pki, "hub-ca")
    _issue(pki, "hub", hub_ca, server=True)
    boxes_ca = _issue(pki, "boxes-ca")
    _issue(pki, "box", boxes_ca)
    _issue(pki, "stranger", _issue(pki, "other-ca"))
    hub = TlsHub(tmp_path / "hub", pki).start()
    yield hub
    if hub.process.poll() is None:
        hub.process.send_signal(signal.SIGTERM)
        hub.process.wait(timeout=30)


def test_with_mutual_tls_only_a_box_with_a_client_certificate_gets_through(tls_hub, tmp_path):
    pki = tls_hub.pki
    token = tls_hub.token()
    for name, extra in (("no-certificate", {}),
                        ("wrong-ca", {"sync_client_certificate": str(pki / "stranger.crt"),
                                      "sync_client_private_key": str(pki / "stranger.key")})):
        other = box_settings(tmp_path / name, sync_ca_certificates=str(pki / "hub-ca.crt"), **extra)
        with pytest.raises(HubError, match="hub unreachable"):
            enrol(other, tls_hub.url, token)

    # the refused boxes never reached the application: the token is still unspent
    box = box_settings(tmp_path / "box", sync_ca_certificates=str(pki / "hub-ca.crt"),
                       sync_client_certificate=str(pki / "box.crt"), sync_client_private_key=str(pki / "box.key"))
    enrol(box, tls_hub.url, token)
    report = make_report()
    enqueue_report(open_database(box.db_path).conn, report)
    result = run_round(box, Parts(box).registry(), sleep=lambda _: None)
    assert (result.pushed, result.push_error, result.release_error) == (1, None, None)
    assert tls_hub.report_ids() == [report["report_id"]]

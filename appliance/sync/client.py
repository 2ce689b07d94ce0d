"""The box's HTTP client for the hub (httpx): enrolment, then signed JSON requests.

The box only ever dials out. Every request after enrolment is signed with the device key
(:mod:`appliance.sync.signing`); HTTPS with the site's CA bundle and, where the site asks
for it, a client certificate (mutual TLS) come from the ``[sync]`` settings.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.errors import SyncError
from appliance.sync import signing
from appliance.sync.identity import public_bytes


class HubError(SyncError):
    """The hub could not be reached (``retryable``) or refused the request (says why)."""

    def __init__(self, message: str, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def http_client(
    base_url: str,
    timeout_s: float,
    ca_certificates: Path | None = None,
    client_certificate: Path | None = None,
    client_private_key: Path | None = None,
) -> httpx.Client:
    """An httpx client for the hub: the site's CA bundle and client certificate if set."""
    verify: ssl.SSLContext | bool = True
    if ca_certificates:
        context = ssl.create_default_context(cafile=str(ca_certificates))
        if client_certificate:
            context.load_cert_chain(str(client_certificate), str(client_private_key or client_certificate))
        verify = context
    return httpx.Client(
        base_url=base_url.rstrip("/"), timeout=timeout_s, verify=verify, headers={"User-Agent": "triage-appliance-sync"}
    )


def _answer(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {}
    if response.status_code >= 400:
        reason = body.get("error") if isinstance(body, dict) else None
        retryable = response.status_code >= 500 or response.status_code == 429
        raise HubError(
            f"hub refused {response.request.method} {response.request.url.path} "
            f"({response.status_code}): {reason or response.text[:200]}",
            retryable,
            response.status_code,
        )
    if not isinstance(body, dict):
        raise HubError("hub answered with something other than a JSON object", True)
    return body


def enrol(client: httpx.Client, token: str, key: Ed25519PrivateKey, appliance_version: str) -> dict:
    """Present the one-time token and the public key; the hub pins it to a device id."""
    public_key = public_bytes(key)
    body = {
        "token": token,
        "public_key": base64.b64encode(public_key).decode(),
        "signature": signing.sign(key, signing.enrolment_string(token, public_key)),
        "appliance_version": appliance_version,
    }
    try:
        return _answer(client.post("/v1/enrol", json=body))
    except httpx.TransportError as exc:
        raise HubError(f"hub unreachable: {exc}", True) from exc


class HubClient:
    """Signed requests from one enrolled device."""

    def __init__(
        self, client: httpx.Client, device_id: str, key: Ed25519PrivateKey, clock: Callable[[], float] = time.time
    ):
        self.http = client
        self.device_id = device_id
        self.key = key
        self.clock = clock

    def post(self, path: str, payload: dict, now: float | None = None) -> dict:
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = int(self.clock() if now is None else now)
        nonce = secrets.token_hex(16)
        message = signing.signing_string("POST", path, body, timestamp, nonce, self.device_id)
        headers = {
            "Content-Type": "application/json",
            "X-Device-Id": self.device_id,
            "X-Timestamp": str(timestamp),
            "X-Nonce": nonce,
            "X-Signature": signing.sign(self.key, message),
        }
        try:
            return _answer(self.http.post(path, content=body, headers=headers))
        except httpx.TransportError as exc:
            raise HubError(f"hub unreachable: {type(exc).__name__}: {exc}", True) from exc

"""What a box signs on every request to the hub, and how the hub checks it (pure).

A request carries four headers besides its body::

    X-Device-Id   the id the hub gave at enrolment
    X-Timestamp   seconds since the epoch, an integer
    X-Nonce       32 random hex digits, never reused
    X-Signature   base64 of the ed25519 signature over :func:`signing_string`

The signed string binds the method, the path with its query, the SHA-256 of the body,
the timestamp, the nonce and the device id, one per line after a version tag, so a
signature cannot be moved to another request, another body or another device. The hub
refuses a timestamp outside its window and a nonce it has seen; both checks together
stop replays (see ``docs/sync.md``).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TAG = "triage-hub-request/1"


def signing_string(method: str, path: str, body: bytes, timestamp: int, nonce: str, device_id: str) -> bytes:
    """The exact bytes that are signed for one request."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((TAG, method.upper(), path, digest, str(timestamp), nonce, device_id)).encode()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Base64 of the ed25519 signature over ``message``."""
    return base64.b64encode(key.sign(message)).decode()


def verify(public_key: bytes, message: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is ``public_key``'s (raw 32 bytes) over ``message``."""
    try:
        raw = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def enrolment_string(token: str, public_key: bytes) -> bytes:
    """What a box signs when it enrols: proof that it holds the key it asks to pin."""
    return "\n".join(
        (TAG, "enrol", hashlib.sha256(token.encode()).hexdigest(), base64.b64encode(public_key).decode())
    ).encode()

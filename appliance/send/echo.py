"""C-ECHO to a destination: can results reach it right now? (for the admin page)."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time

from appliance.config import Destination, SenderSettings


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str


def echo(ae_title: str, destination: Destination, policy: SenderSettings) -> EchoResult:
    """One association with the Verification SOP class and one C-ECHO, said in words."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(Verification)
    ae.connection_timeout = policy.connect_timeout_s
    ae.acse_timeout = policy.acse_timeout_s
    ae.dimse_timeout = policy.dimse_timeout_s
    ae.network_timeout = max(policy.acse_timeout_s, policy.dimse_timeout_s)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if assoc.is_rejected:
        return EchoResult(False, "association rejected by the destination (check its AE title and our peer entry)")
    if not assoc.is_established:
        return EchoResult(False, f"no association: {destination.host}:{destination.port} did not accept one")
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if status and status.Status == 0x0000:
        return EchoResult(True, "C-ECHO answered: success (0x0000)")
    code = f"0x{status.Status:04X}" if status else "no response"
    return EchoResult(False, f"C-ECHO failed: {code}")

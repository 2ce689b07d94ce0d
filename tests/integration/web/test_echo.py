"""C-ECHO from the admin page's helper against a real Verification SCP."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from appliance.config import Destination, SenderSettings
from appliance.send.echo import echo
from scripts.harness import free_port


def test_echo_succeeds_against_a_listening_scp_and_says_why_when_refused():
    port = free_port()
    scp = AE(ae_title="PACS")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        policy = SenderSettings(connect_timeout_s=10, acse_timeout_s=10, dimse_timeout_s=10)
        ok = echo("TRIAGE", Destination(ae_title="PACS", host="127.0.0.1", port=port), policy)
        assert ok.ok and "0x0000" in ok.message
        wrong = echo("TRIAGE", Destination(ae_title="PACS", host="127.0.0.1", port=free_port()), policy)
        assert not wrong.ok and "did not accept" in wrong.message
    finally:
        server.shutdown()

"""Sending the mixed stream: an instance the appliance did not acknowledge is logged with
the reason and sent once more; a second shortfall stops the build with every reason."""

from __future__ import annotations

import threading

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from tests.helpers.series import write_ct_series
from training.errors import BuildError
from training.mixed_stream import _send_series


class AbortingSCP:
    """A real Storage SCP that aborts the association on its ``abort_at``-th C-STORE
    (counted over the whole run) and answers ``status`` to every other one."""

    def __init__(self, abort_at: set[int], status: int = 0x0000):
        self.abort_at, self.status, self.calls, self.stored = abort_at, status, 0, set()
        self.lock = threading.Lock()
        ae = AE(ae_title="TRIAGE")
        ae.add_supported_context(CTImageStorage)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        self.port = self.server.server_address[1]

    def on_store(self, event):
        with self.lock:
            self.calls += 1
            if self.calls in self.abort_at:
                event.assoc.abort()
                return 0xA700
            if self.status == 0x0000:
                self.stored.add(event.request.AffectedSOPInstanceUID)
            return self.status


@pytest.fixture
def series(tmp_path):
    return tmp_path / "P0001", write_ct_series(tmp_path / "P0001" / "CT", 5)


def test_instances_lost_to_an_abort_are_sent_again_and_the_reason_logged(tmp_path, series):
    folder, files = series
    scp = AbortingSCP(abort_at={3})
    lines: list[str] = []
    try:
        _send_series(folder, scp.port, tmp_path / "serve.log", lines.append)
    finally:
        scp.server.shutdown()
    assert len(scp.stored) == 5  # every instance arrived once the retry ran
    assert len(lines) == 1 and "P0001: 3 of 5 instances not acknowledged" in lines[0]
    assert "no response (association aborted or timed out)" in lines[0] and "new association" in lines[0]


def test_a_second_shortfall_stops_the_build_with_the_status_and_the_appliance_log(tmp_path, series):
    folder, _ = series
    (tmp_path / "serve.log").write_text("listener: refused P0001: out of space\n")
    scp = AbortingSCP(abort_at=set(), status=0xA700)
    try:
        with pytest.raises(BuildError) as raised:
            _send_series(folder, scp.port, tmp_path / "serve.log", lambda line: None)
    finally:
        scp.server.shutdown()
    message = str(raised.value)
    assert "did not acknowledge 5 of 5 instances of P0001 after one retry" in message
    assert "CT/" in message and "status 0xA700" in message and "refused P0001: out of space" in message

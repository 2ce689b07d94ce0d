"""The result sender against real peers on real sockets: Orthanc, dcmtk's storescp, a
pynetdicom SCP answering chosen statuses and a port that hangs up on every connection."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from appliance.config import Settings, load_settings
from appliance.db import open_database
from appliance.send.outbox import Outbox, OutboxItem, OutgoingObject, destination_key, lane_states
from appliance.send.policy import BreakerMode
from appliance.send.sender import Sender
from scripts.harness import READY_TIMEOUT_S, Orthanc, free_port, stop_process, tcp_env, wait_until
from tests.helpers.dimse import echo
from tests.helpers.series import ct_dataset

# Fast policy for tests: retries after 0.1-0.4 s, the circuit opens after 3 failures.
FAST = {"retry_initial_s": "0.1", "retry_max_s": "0.4", "retry_jitter": "0",
        "breaker_failures": "3", "breaker_cooldown_s": "0.5", "poll_interval_s": "0.05",
        "connect_timeout_s": "5", "acse_timeout_s": "5", "dimse_timeout_s": "10"}


def settings(tmp_path: Path, destinations: list[str], **sender: str) -> Settings:
    environ = {"APPLIANCE_DATA_DIR": str(tmp_path / "data"),
               "APPLIANCE_DICOM_DESTINATIONS": ",".join(destinations)}
    environ.update({f"APPLIANCE_SENDER_{k.upper()}": v for k, v in {**FAST, **sender}.items()})
    return load_settings(environ=environ)


def secondary_capture(folder: Path, study_uid: str, syntax: str = ExplicitVRLittleEndian,
                      seed: int = 0) -> tuple[Path, Dataset]:
    """A 16x16 8-bit secondary capture written to ``folder``, in ``syntax``."""
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientName, ds.PatientID = "Test^Sender", "SEND001"
    ds.Modality, ds.ConversionType, ds.InstanceNumber = "OT", "WSD", 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(seed).integers(0, 255, (16, 16), np.uint8).tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sop}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, ds


def enqueue(outbox: Outbox, path: Path, ds: Dataset, destinations, now: float | None = None
            ) -> list[int]:
    return outbox.enqueue(OutgoingObject.of(path, ds), destinations, now=now)


class Storescp:
    """dcmtk's storescp on ``port``, writing what it receives to ``folder``."""

    def __init__(self, folder: Path, port: int, *options: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, port
        self.log = folder.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["storescp", "-aet", "STORESCP", "-od", str(folder), *options, str(port)],
                env=tcp_env(), stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._listening, what="storescp to listen")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"storescp exited ({self.process.returncode}): "
                                 f"{self.log.read_text(errors='replace')}")
        return echo(self.port, "STORESCP")

    def received(self) -> dict[str, pydicom.Dataset]:
        found = (pydicom.dcmread(p) for p in self.folder.iterdir() if p.is_file())
        return {ds.SOPInstanceUID: ds for ds in found}

    def stop(self) -> None:
        stop_process(self.process)


class StatusSCP:
    """A pynetdicom storage SCP answering each SOP Instance UID with a chosen status."""

    def __init__(self, port: int, statuses: dict[str, int]):
        self.statuses = statuses
        self.received: list[str] = []
        self.ae = AE(ae_title="STATUS")
        self.ae.add_supported_context(SecondaryCaptureImageStorage, ALL_TRANSFER_SYNTAXES)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        self.received.append(uid)
        return self.statuses.get(uid, 0x0000)

    def stop(self) -> None:
        self.server.shutdown()


class HangUp:
    """A TCP port that accepts every connection and closes it at once, counting them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        if self.sock.fileno() != -1:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self.sock.close()
        self.thread.join(READY_TIMEOUT_S)


@pytest.fixture
def stoppers() -> Iterator[list]:
    """Things with ``stop()`` to stop after the test, last started first."""
    started: list = []
    yield started
    for thing in reversed(started):
        thing.stop()


def by_destination(outbox: Outbox, key: str) -> list[OutboxItem]:
    return outbox.items(destination=key)


def test_results_reach_orthanc_while_a_dead_destination_waits_then_catches_up(tmp_path, stoppers):
    pacs = Orthanc(tmp_path / "orthanc").start()
    stoppers.append(pacs)
    dead_port = free_port()
    config = settings(tmp_path, [pacs.destination, f"LATER@127.0.0.1:{dead_port}"])
    orthanc_key, later_key = (destination_key(d) for d in config.dicom.destinations)
    sender = Sender(config, open_database(config.db_path))
    study = generate_uid()
    objects = [secondary_capture(tmp_path / "results", study, seed=i) for i in range(2)]
    for path, ds in objects:
        enqueue(sender.outbox, path, ds, config.dicom.destinations)

    sender.start()
    stoppers.append(sender)
    arrived = pacs.wait_for_instances(study, 2)
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in arrived} == {ds.SOPInstanceUID
                                                                       for _, ds in objects}
    assert pacs.instance_metadata(arrived[0]["ID"])["RemoteAET"] == "TRIAGE"
    wait_until(lambda: all(i.state == "sent" for i in by_destination(sender.outbox, orthanc_key)),
               what="Orthanc's rows to be marked sent")
    wait_until(lambda: all(i.last_error for i in by_destination(sender.outbox, later_key)),
               what="the dead destination to be tried")
    waiting = by_destination(sender.outbox, later_key)
    assert [i.state for i in waiting] == ["pending", "pending"]
    assert all(i.attempts == 0 and "no connection" in i.last_error for i in waiting)
    assert all(i.next_attempt_at > i.created_at for i in waiting)  # backing off

    receiver = Storescp(tmp_path / "later", dead_port)
    stoppers.append(receiver)
    wait_until(lambda: all(i.state == "sent" for i in by_destination(sender.outbox, later_key)),
               what="the late destination's rows to be sent")
    assert set(receiver.received()) == {ds.SOPInstanceUID for _, ds in objects}
    assert len(pacs.instances_of_study(study)) == 2  # nothing sent twice to Orthanc


def test_the_circuit_opens_after_repeated_failures_and_half_opens_with_one_trial(
        tmp_path, stoppers):
    hangup = HangUp()
    stoppers.append(hangup)
    config = settings(tmp_path, [f"FLAKY@127.0.0.1:{hangup.port}"], retry_initial_s="1",
                      retry_max_s="1", breaker_failures="3", breaker_cooldown_s="100")
    [key] = (destination_key(d) for d in config.dicom.destinations)
    sender = Sender(config, open_database(config.db_path))
    reader = open_database(config.db_path).conn  # another process's view: the admin page's
    assert lane_states(reader)[key].breaker.mode(1000) is BreakerMode.CLOSED
    study = generate_uid()
    for i in range(3):
        path, ds = secondary_capture(tmp_path / "results", study, seed=i)
        enqueue(sender.outbox, path, ds, config.dicom.destinations, now=1000)

    for now in (1000, 1001, 1002):  # three failures, each after the one-second backoff
        assert sender.send_due_once(now)[key].association_error == "association aborted by the peer"
    assert hangup.connections == 3
    assert sender.breaker(key).mode(1002) is BreakerMode.OPEN
    saved = lane_states(reader)[key]
    assert (saved.breaker.mode(1002), saved.breaker.failures, saved.not_before) == (BreakerMode.OPEN, 3, 1102)
    assert saved.last_error == "association aborted by the peer" and saved.breaker.mode(1102) is BreakerMode.HALF_OPEN
    for now in (1002.5, 1003, 1050, 1101.9):  # open: no association at all
        assert not sender.send_due_once(now)[key].associated
    assert hangup.connections == 3
    assert {(i.state, i.attempts, i.next_attempt_at) for i in sender.outbox.items()} == {
        ("pending", 0, 1102)}

    assert sender.send_due_once(1102)[key].associated  # half-open: one trial, which fails
    assert hangup.connections == 4 and sender.breaker(key).mode(1102) is BreakerMode.OPEN
    hangup.stop()
    receiver = Storescp(tmp_path / "rx", hangup.port)
    stoppers.append(receiver)

    trial = sender.send_due_once(1202)[key]  # the destination is back: one trial object
    assert (trial.sent, sender.breaker(key).mode(1202)) == (1, BreakerMode.CLOSED)
    saved = lane_states(reader)[key]
    assert (saved.breaker.mode(1202), saved.breaker.failures, saved.last_error) == (BreakerMode.CLOSED, 0, None)
    assert sender.send_due_once(1202)[key].sent == 2
    assert len(receiver.received()) == 3


def test_a_peer_that_refuses_our_transfer_syntax_gets_the_fallback(tmp_path, stoppers):
    receiver = Storescp(tmp_path / "rx", free_port(), "+xi")  # Implicit VR LE only
    stoppers.append(receiver)
    config = settings(tmp_path, [f"STORESCP@127.0.0.1:{receiver.port}"])
    sender = Sender(config, open_database(config.db_path))
    study = generate_uid()
    rle_path, rle = secondary_capture(tmp_path / "results", study, RLELossless, seed=1)
    explicit_path, explicit = secondary_capture(tmp_path / "results", study, seed=2)
    for path, ds in ((rle_path, rle), (explicit_path, explicit)):
        enqueue(sender.outbox, path, ds, config.dicom.destinations, now=1000)

    [round_] = sender.send_due_once(1000).values()
    assert (round_.sent, round_.retried, round_.dead) == (2, 0, 0)
    got = receiver.received()
    assert {uid: ds.file_meta.TransferSyntaxUID for uid, ds in got.items()} == {
        rle.SOPInstanceUID: ImplicitVRLittleEndian, explicit.SOPInstanceUID: ImplicitVRLittleEndian}
    original = pydicom.dcmread(rle_path)
    assert original.file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(got[rle.SOPInstanceUID].pixel_array, original.pixel_array)
    assert np.array_equal(got[explicit.SOPInstanceUID].pixel_array, explicit.pixel_array)


def test_failure_statuses_dead_letter_or_retry_and_warnings_count_as_sent(tmp_path, stoppers):
    study = generate_uid()
    objects = [secondary_capture(tmp_path / "results", study, seed=i) for i in range(4)]
    (p_ok, ok), (p_warn, warn), (p_bad, bad), (p_busy, busy) = objects
    peer = StatusSCP(free_port(), {warn.SOPInstanceUID: 0xB000, bad.SOPInstanceUID: 0xA900,
                                   busy.SOPInstanceUID: 0x0110})
    stoppers.append(peer)
    config = settings(tmp_path, [f"STATUS@127.0.0.1:{peer.server.server_address[1]}"],
                      max_attempts="2", retry_initial_s="10", retry_max_s="10")
    sender = Sender(config, open_database(config.db_path))
    ids = {ds.SOPInstanceUID: enqueue(sender.outbox, p, ds, config.dicom.destinations, now=0)[0]
           for p, ds in objects}

    [first] = sender.send_due_once(100).values()
    assert (first.sent, first.retried, first.dead) == (2, 1, 1)
    row = {uid: sender.outbox.get(i) for uid, i in ids.items()}
    state = {uid: (item.state, item.last_status) for uid, item in row.items()}
    assert state[ok.SOPInstanceUID] == ("sent", 0)
    assert state[warn.SOPInstanceUID] == ("sent", 0xB000)
    assert state[bad.SOPInstanceUID] == ("dead", 0xA900)
    retrying = row[busy.SOPInstanceUID]
    assert (retrying.state, retrying.attempts, retrying.next_attempt_at) == ("pending", 1, 110)

    [early] = sender.send_due_once(105).values()
    assert not early.associated  # the retry is not due yet
    [second] = sender.send_due_once(110).values()  # second processing failure: max_attempts
    assert second.dead == 1
    dead = sender.outbox.dead_letters()
    assert {i.sop_instance_uid for i in dead} == {bad.SOPInstanceUID, busy.SOPInstanceUID}
    assert "0xA900" in sender.outbox.get(ids[bad.SOPInstanceUID]).last_error

    peer.statuses.clear()  # the peer was fixed: a biomed user retries the dead letters
    assert all(sender.outbox.retry(i.id, "test", now=200) for i in dead)
    assert not sender.outbox.retry(ids[ok.SOPInstanceUID], "test")  # only dead letters can be retried
    [third] = sender.send_due_once(200).values()
    assert third.sent == 2 and sender.outbox.dead_letters() == []
    assert peer.received.count(bad.SOPInstanceUID) == 2


def test_a_peer_rejecting_our_ae_title_keeps_items_waiting_without_spending_tries(
        tmp_path, stoppers):
    peer = StatusSCP(free_port(), {})
    peer.ae.require_calling_aet = ["PACS_ONLY"]
    stoppers.append(peer)
    config = settings(tmp_path, [f"STATUS@127.0.0.1:{peer.server.server_address[1]}"],
                      max_attempts="1")
    sender = Sender(config, open_database(config.db_path))
    path, ds = secondary_capture(tmp_path / "results", generate_uid())
    [item_id] = enqueue(sender.outbox, path, ds, config.dicom.destinations, now=0)

    for now in (1, 2, 3):
        sender.send_due_once(now)
    item = sender.outbox.get(item_id)
    assert (item.state, item.attempts) == ("pending", 0)  # max_attempts=1, yet not dead
    assert "association rejected" in item.last_error and "Calling AE" in item.last_error

    peer.ae.require_calling_aet = ["TRIAGE"]
    [round_] = sender.send_due_once(item.next_attempt_at).values()
    assert round_.sent == 1 and peer.received == [ds.SOPInstanceUID]


def test_a_restarted_sender_resumes_pending_items(tmp_path, stoppers):
    port = free_port()
    config = settings(tmp_path, [f"STORESCP@127.0.0.1:{port}"])
    first = Sender(config, open_database(config.db_path))
    study = generate_uid()
    objects = [secondary_capture(tmp_path / "results", study, seed=i) for i in range(3)]
    ids = [enqueue(first.outbox, p, ds, config.dicom.destinations)[0] for p, ds in objects]
    assert enqueue(first.outbox, *objects[0], config.dicom.destinations) == [ids[0]]  # idempotent
    first.start()
    wait_until(lambda: all(i.last_error for i in first.outbox.items()), what="a failed try")
    first.stop()  # only the database file carries over

    receiver = Storescp(tmp_path / "rx", port)
    stoppers.append(receiver)
    second = Sender(config, open_database(config.db_path))
    assert [i.state for i in second.outbox.items()] == ["pending"] * 3
    second.start()
    stoppers.append(second)
    wait_until(lambda: all(i.state == "sent" for i in second.outbox.items()), what="resume")
    assert set(receiver.received()) == {ds.SOPInstanceUID for _, ds in objects}


def test_a_sop_class_the_peer_does_not_support_is_the_objects_failure_not_the_peers(
        tmp_path, stoppers):
    peer = StatusSCP(free_port(), {})  # Secondary Capture only
    stoppers.append(peer)
    config = settings(tmp_path, [f"STATUS@127.0.0.1:{peer.server.server_address[1]}"],
                      max_attempts="1")
    [key] = (destination_key(d) for d in config.dicom.destinations)
    sender = Sender(config, open_database(config.db_path))
    ct = ct_dataset(generate_uid(), generate_uid(), 0, size=16)
    ct_path = tmp_path / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    [ct_id] = enqueue(sender.outbox, ct_path, ct, config.dicom.destinations, now=0)

    [refused] = sender.send_due_once(1).values()
    assert (refused.association_error, refused.dead) == (None, 1)
    assert "CT Image Storage" in sender.outbox.get(ct_id).last_error
    assert sender.breaker(key).failures == 0  # the destination itself is fine

    path, sc = secondary_capture(tmp_path / "results", generate_uid())
    enqueue(sender.outbox, path, sc, config.dicom.destinations, now=2)
    assert sender.send_due_once(2)[key].sent == 1

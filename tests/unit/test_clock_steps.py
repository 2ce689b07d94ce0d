"""A wall clock stepped back an hour (issue 23), with injected clocks: a 5 s retry, a dead
worker's lease, an open circuit and a sign-in lockout do not wait out the step; a session
made before it ends; the worker notices and audits the step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import jobs
from appliance.config import WebSettings, WorkerSettings, load_settings
from appliance.db import open_database, transaction
from appliance.errors import LoginRefused
from appliance.send.outbox import Outbox, OutgoingObject
from appliance.send.policy import Breaker, BreakerMode
from appliance.send.sender import Sender
from appliance.states import JobState, SeriesState
from appliance.triage.heartbeat import ClockWatch
from appliance.triage.worker import Worker
from appliance.web import accounts, sessions
from scripts.harness import free_port
from tests.helpers.series import ct_dataset

T0 = 1_800_000_000.0
HOUR = 3600.0


@pytest.fixture
def db(tmp_path):
    return open_database(tmp_path / "appliance.db")


def test_a_retry_due_in_seconds_is_not_held_for_the_hour_the_clock_went_back(db, tmp_path):
    destination = f"PACS@127.0.0.1:{free_port()}"  # nothing listens: every association fails
    settings = load_settings(
        environ={
            "APPLIANCE_DATA_DIR": str(tmp_path),
            "APPLIANCE_DICOM_DESTINATIONS": destination,
            "APPLIANCE_SENDER_CONNECT_TIMEOUT_S": "30",
        }
    )
    ds = ct_dataset("1.2.3", "1.2.3.4", 0, size=16)
    ds.save_as(tmp_path / "object.dcm", enforce_file_format=True)
    outbox = Outbox(db)
    outbox.enqueue(OutgoingObject.of(tmp_path / "object.dcm", ds), [destination], now=T0)
    sender = Sender(settings, db, rng=lambda: 0.0)
    first = sender.send_due_once(T0)[destination]
    assert first.association_error and first.next_at == pytest.approx(T0 + 5)
    (held,) = outbox.items(destination)
    assert held.next_attempt_at == pytest.approx(T0 + 5)
    assert outbox.due(destination, T0 - HOUR, 10, settings.sender.longest_wait_s) == [held]
    assert outbox.due(destination, T0 + 1, 10, settings.sender.longest_wait_s) == []  # no step: it waits
    after_step = sender.send_due_once(T0 - HOUR)[destination]
    assert after_step.association_error  # it tried again at once instead of in an hour


def test_a_circuit_opened_before_the_step_lets_a_trial_through():
    opened = Breaker(threshold=1, cooldown_s=60).after_failure(T0)
    assert opened.mode(T0 + 1) is BreakerMode.OPEN
    assert opened.mode(T0 - HOUR) is BreakerMode.HALF_OPEN


def queue(conn, now: float) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO series (series_instance_uid, study_instance_uid, state, first_received_at, "
            "last_received_at, updated_at) VALUES ('1.2.3', '1.2', ?, ?, ?, ?)",
            (SeriesState.QUEUED, now, now, now),
        )
        conn.execute(
            "INSERT INTO jobs (series_instance_uid, study_instance_uid, generation, state, created_at, updated_at) "
            "VALUES ('1.2.3', '1.2', 1, ?, ?, ?)",
            (JobState.QUEUED, now, now),
        )


def test_a_lease_taken_before_the_step_can_be_taken_again(db):
    queue(db.conn, T0)
    with transaction(db.conn) as conn:
        assert jobs.claim(conn, "host:1:1", 300, 3, T0) is not None
    with transaction(db.conn) as conn:
        assert jobs.claim(conn, "host:2:1", 300, 3, T0 + 10) is None  # held, no step
        again = jobs.claim(conn, "host:2:1", 300, 3, T0 - HOUR)
    assert again is not None and (again.owner, again.attempts) == ("host:2:1", 2)


def test_an_idle_worker_sees_a_lease_given_before_the_step_as_claimable(db):
    """The worker reads :func:`jobs.claimable` before it takes the write lock: it must agree
    with :func:`jobs.claim`, or a dead worker's series waits out the step after all."""
    queue(db.conn, T0)
    with transaction(db.conn) as conn:
        jobs.claim(conn, "host:1:1", 300, 3, T0)
    assert not jobs.claimable(db.conn, T0 + 10, 300)  # held, no step
    assert jobs.claimable(db.conn, T0 - HOUR, 300)


def received(conn, now: float, released: bool) -> None:
    arrival = jobs.InstanceArrived("1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", "1.2", "1.2.3", "CT", "HEAD", "Head",
                                   "1.2.840.10008.1.2.1", 10, "aa", Path("/x"), "CT1", "assoc-1")
    with transaction(conn):
        jobs.instance_arrived(conn, arrival, 1, now)
        if released:
            jobs.mark_released(conn, ["1.2.3"], now)


def completed(conn, now: float) -> list[str]:
    with transaction(conn):
        return jobs.queue_complete_series(conn, quiet_period_s=30, release_grace_s=1, still_sending=set(), now=now,
                                          priority=lambda facts: 0)


@pytest.mark.parametrize("released", [True, False], ids=["released", "left-open"])
def test_a_series_received_before_the_step_back_waits_its_grace_or_quiet_period_not_the_hour(db, released):
    received(db.conn, T0, released)
    wait = 1 if released else 30  # the grace after a release; the quiet period otherwise
    assert completed(db.conn, T0 + wait - 0.5) == []  # no step: it waits as configured
    assert completed(db.conn, T0 - HOUR) == []  # the step is noticed: the wait starts again
    assert completed(db.conn, T0 - HOUR + wait - 0.5) == []
    assert completed(db.conn, T0 - HOUR + wait) == ["1.2.3"]


@pytest.fixture
def conn(db):
    accounts.add_user(db.conn, "rad", "radiologist", "twelve chars or more", "test")
    return db.conn


def test_failures_before_the_step_do_not_lock_anyone_out_for_its_length(conn):
    settings = WebSettings(login_failures_per_user=2, login_lockout_minutes=15)
    for _ in range(2):
        with pytest.raises(LoginRefused, match="wrong"):
            sessions.sign_in(conn, settings, "rad", "not the password", "10.0.0.1", now=T0)
    with pytest.raises(LoginRefused, match="too many"):
        sessions.sign_in(conn, settings, "rad", "twelve chars or more", "10.0.0.1", now=T0 + 60)
    token, _ = sessions.sign_in(conn, settings, "rad", "twelve chars or more", "10.0.0.1", now=T0 - HOUR)
    assert token


def test_a_session_made_before_the_step_back_ends(conn):
    settings = WebSettings(session_idle_minutes=30)
    token, _ = sessions.sign_in(conn, settings, "rad", "twelve chars or more", "10.0.0.1", now=T0)
    assert sessions.session_for(conn, settings, token, now=T0 + 30) is not None
    assert sessions.session_for(conn, settings, token, now=T0 - HOUR) is None


class Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = T0, 50.0


def test_the_worker_notices_a_step_over_a_minute_and_audits_it(db):
    clocks = Clocks()
    watch = ClockWatch(60.0, lambda: clocks.wall, lambda: clocks.mono)
    clocks.wall += 30
    clocks.mono += 30
    assert watch.stepped() == 0.0
    clocks.wall += 45  # drift or a small correction: not a step
    assert watch.stepped() == 0.0
    clocks.wall -= HOUR
    clocks.mono += 1
    assert watch.stepped() == pytest.approx(-HOUR - 1)
    worker = Worker(db, WorkerSettings(), triage=None, outcome=None, name="host:1:1")  # type: ignore[arg-type]
    worker.audit_clock_step(-HOUR - 1)
    worker.audit_clock_step(0.0)
    rows = db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'clock-stepped'").fetchall()
    assert [json.loads(r[0]) for r in rows] == [{"by_s": -HOUR - 1, "worker": "host:1:1"}]

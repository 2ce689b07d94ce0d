"""The worker's heartbeat (issue 23): beats as the loop advances, with an injected clock;
``/readyz``'s worker check names a worker past its promised beat while series are queued."""

from __future__ import annotations

import pytest

from appliance.config import WorkerSettings, load_settings
from appliance.db import open_database, transaction
from appliance.states import JobState
from appliance.triage.heartbeat import Heartbeat, beats, hung
from appliance.web.routes.health import worker_problem

T0 = 1_800_000_000.0
SETTINGS = WorkerSettings(heartbeat_s=60.0, series_timeout_s=120.0, lease_s=300.0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path):
    return open_database(tmp_path / "appliance.db")


def queue_job(conn, at: float) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO jobs (series_instance_uid, study_instance_uid, generation, state, created_at, updated_at) "
            "VALUES ('1.2.3', '1.2', 1, ?, ?, ?)",
            (JobState.QUEUED, at, at),
        )


def test_idle_beats_are_written_at_most_every_quarter_period_and_a_job_beat_always(db):
    clock = Clock()
    heart = Heartbeat(db.conn, "host:1:1", SETTINGS, clock)
    heart.beat()
    clock.now += 10
    heart.beat()  # within a quarter of 60 s: not written
    (beat,) = beats(db.conn)
    assert (beat.beat_at, beat.expect_by, beat.job_id) == (T0, T0 + 60, None)
    heart.beat(job_id=7)  # a job: written at once, promising a beat after the series' timeout
    (beat,) = beats(db.conn)
    assert (beat.beat_at, beat.expect_by, beat.job_id) == (T0 + 10, T0 + 10 + 180, 7)
    clock.now += 1
    heart.beat()  # back to idle: written
    assert beats(db.conn)[0].job_id is None
    heart.end()
    assert beats(db.conn) == []


def test_readiness_names_a_worker_past_its_beat_only_while_series_are_queued(db):
    settings = load_settings(environ={"APPLIANCE_WORKER_HEARTBEAT_S": "60"})
    clock = Clock()
    Heartbeat(db.conn, "host:41:1", SETTINGS, clock).beat()
    assert worker_problem(db.conn, settings, T0 + 600) is None  # nothing queued: nobody waits on it
    queue_job(db.conn, T0 + 5)
    assert worker_problem(db.conn, settings, T0 + 59) is None
    problem = worker_problem(db.conn, settings, T0 + 90)
    assert problem is not None and "worker host:41:1 (pid" in problem
    assert "has not advanced for 90 s" in problem and "next beat was due 30 s ago" in problem
    # another worker beating keeps the box ready
    clock.now = T0 + 85
    Heartbeat(db.conn, "host:42:1", SETTINGS, clock).beat()
    assert worker_problem(db.conn, settings, T0 + 90) is None


def test_without_any_heartbeat_a_job_waiting_longer_than_a_lease_is_the_sign(db):
    settings = load_settings(environ={"APPLIANCE_WORKER_LEASE_S": "300"})
    queue_job(db.conn, T0)
    assert worker_problem(db.conn, settings, T0 + 299) is None
    assert "a job has waited 301 s and no worker has a heartbeat" == worker_problem(db.conn, settings, T0 + 301)


def test_hung_allows_a_grace_and_forget_removes_the_dead(db):
    clock = Clock()
    Heartbeat(db.conn, "host:51:1", SETTINGS, clock).beat()
    assert [b.name for b in hung(db.conn, T0 + 61)] == ["host:51:1"]
    assert hung(db.conn, T0 + 61, grace_s=60) == []
    assert [b.name for b in hung(db.conn, T0 + 121, grace_s=60)] == ["host:51:1"]
    Heartbeat(db.conn, "host:52:1", SETTINGS, clock).forget(lambda name: name == "host:51:1")
    assert beats(db.conn) == []

"""The series state machine and the job queue (appliance/jobs.py), with an injected clock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import jobs
from appliance.states import SeriesState
from appliance.db import open_database, transaction
from appliance.errors import IllegalTransition, LeaseLost
from appliance.triage.worker import dead_on_this_host

ARRIVAL = jobs.InstanceArrived("1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", "1.2", "1.2.3", "CT", "HEAD", "Head",
                               "1.2.840.10008.1.2.1", 10, "aa", Path("/x"), "CT1", "assoc-1")


@pytest.fixture
def conn(tmp_path):
    return open_database(tmp_path / "jobs.db").conn


def arrive(conn, now: float) -> None:
    with transaction(conn):
        jobs.instance_arrived(conn, ARRIVAL, 1, now)


def complete(conn, now: float) -> list[str]:
    with transaction(conn):
        return jobs.queue_complete_series(conn, 5, 1, set(), now, lambda facts: 0)


def claim(conn, owner: str, now: float, lease_s: float = 300, max_attempts: int = 3):
    with transaction(conn):
        return jobs.claim(conn, owner, lease_s, max_attempts, now)


def series(conn) -> tuple:
    return conn.execute("SELECT state, generation, reason, flag, model FROM series").fetchone()


def test_a_series_goes_receiving_queued_running_triaged(conn):
    arrive(conn, 100)
    assert series(conn)[:2] == ("receiving", 0)
    assert complete(conn, 104) == [] and complete(conn, 106) == ["1.2.3"]
    assert series(conn)[:2] == ("queued", 1)
    job = claim(conn, "w", 107)
    assert series(conn)[0] == "running" and job.generation == 1 and job.attempts == 1
    with transaction(conn):
        assert jobs.finish(conn, job, SeriesState.TRIAGED, None, 108, jobs.Triaged(True, 0.9, "m 1.0.0"))
    assert series(conn) == ("triaged", 1, None, 1, "m 1.0.0")
    assert conn.execute("SELECT state FROM jobs").fetchall() == [("done",)]


def test_a_late_instance_while_running_supersedes_the_result_and_queues_again(conn):
    arrive(conn, 100)
    complete(conn, 106)
    job = claim(conn, "w", 107)
    arrive(conn, 108)  # a late instance reopens the series mid-triage
    with transaction(conn):
        current = jobs.finish(conn, job, SeriesState.TRIAGED, None, 109, jobs.Triaged(False, 0.1, "m 1.0.0"))
    assert current is False
    assert series(conn)[0] == "receiving"  # the old result did not overwrite it
    assert complete(conn, 114) == ["1.2.3"] and series(conn)[:2] == ("queued", 2)


def test_a_late_instance_supersedes_the_queued_job(conn):
    arrive(conn, 100)
    complete(conn, 106)
    arrive(conn, 107)
    assert conn.execute("SELECT state, reason FROM jobs").fetchall() == [("superseded", "new instances arrived")]
    assert claim(conn, "w", 108) is None


def test_a_job_past_its_attempts_fails_its_series_with_the_reason(conn):
    arrive(conn, 100)
    complete(conn, 106)
    for n in range(2):
        assert claim(conn, f"w{n}", 107 + 400 * n, max_attempts=2) is not None
    assert claim(conn, "w2", 1000, max_attempts=2) is None
    state, _, reason, _, _ = series(conn)
    assert state == "failed" and "abandoned after 2 attempts" in reason


def test_finishing_someone_elses_job_raises_lease_lost(conn):
    arrive(conn, 100)
    complete(conn, 106)
    job = claim(conn, "w1", 107, lease_s=10)
    assert claim(conn, "w2", 118) is not None  # w1's lease ran out
    with pytest.raises(LeaseLost), transaction(conn):
        jobs.finish(conn, job, SeriesState.FAILED, "x", 119)


def test_illegal_transitions_raise():
    jobs.check_series_transition("running", "triaged")
    for current, new in [("receiving", "triaged"), ("triaged", "running"), ("failed", "queued"),
                         ("queued", "triaged"), ("not-eligible", "failed")]:
        with pytest.raises(IllegalTransition, match=f"{current!r} to {new!r}"):
            jobs.check_series_transition(current, new)


def test_a_job_cannot_finish_with_a_non_terminal_state(conn):
    arrive(conn, 100)
    complete(conn, 106)
    job = claim(conn, "w", 107)
    for state, triaged in [(SeriesState.RUNNING, None), (SeriesState.TRIAGED, None),
                           (SeriesState.FAILED, jobs.Triaged(True, 0.9, "m"))]:
        with pytest.raises(IllegalTransition), transaction(conn):
            jobs.finish(conn, job, state, "x", 108, triaged)


def test_leases_of_dead_owners_end_at_once(conn):
    arrive(conn, 100)
    complete(conn, 106)
    claim(conn, "host:1:1", 107, lease_s=300)
    with transaction(conn):
        assert jobs.expire_leases_of(conn, lambda owner: owner == "host:2:1", 108) == []
    assert claim(conn, "other", 108) is None  # a live owner keeps its lease
    with transaction(conn):
        assert jobs.expire_leases_of(conn, lambda owner: owner == "host:1:1", 108) == [1]
    again = claim(conn, "other", 108)
    assert again is not None and again.attempts == 2


def test_dead_on_this_host_means_a_gone_process_of_this_host_only():
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = f"{host}:{os.getpid()}:1"
    assert dead_on_this_host(f"{host}:{gone.pid}:7", me)
    assert not dead_on_this_host(f"{host}:{os.getppid()}:7", me)  # alive
    assert not dead_on_this_host(f"{host}:{os.getpid()}:9", me)  # ourselves (another thread)
    assert not dead_on_this_host(f"elsewhere:{gone.pid}:7", me)  # another host: its lease decides
    assert not dead_on_this_host("worker-that-died", me)


def test_claimable_says_what_claim_would_find_without_a_transaction(conn):
    arrive(conn, 100)
    assert not jobs.claimable(conn, 101, 10)  # still receiving: no job yet
    complete(conn, 106)
    assert jobs.claimable(conn, 106, 10) and not conn.in_transaction
    job = claim(conn, "w", 107, lease_s=10)
    assert not jobs.claimable(conn, 116, 10) and claim(conn, "x", 116, lease_s=10) is None  # leased
    assert jobs.claimable(conn, 117, 10) and claim(conn, "x", 117, lease_s=10).id == job.id  # the lease ran out

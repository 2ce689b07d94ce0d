from __future__ import annotations

from pathlib import Path

import pytest

from appliance.db import open_database
from appliance.jobs import InstanceArrived
from appliance.receive.index import IngestIndex, StoreOutcome


@pytest.fixture
def index(tmp_path):
    return IngestIndex(open_database(tmp_path / "i.db"))


def received(sop: str, series: str = "1.2.3", sha: str = "aa") -> InstanceArrived:
    return InstanceArrived(sop, "1.2.840.10008.5.1.4.1.1.2", "1.2", series, "CT", "", "", "1.2.840.10008.1.2.1", 10, sha,
                           Path("/x"), "CT", "assoc-1")


def states(index):
    return index.db.conn.execute("SELECT state FROM series").fetchall()


def jobs(index):
    return index.db.conn.execute("SELECT generation, state FROM jobs ORDER BY id").fetchall()


def test_identical_resend_adds_nothing_and_changed_bytes_replace(index):
    assert index.record(received("1.2.3.1"), now=1) == StoreOutcome.STORED
    assert index.record(received("1.2.3.1"), now=2) == StoreOutcome.DUPLICATE
    assert index.record(received("1.2.3.1", sha="bb"), now=3) == StoreOutcome.REPLACED
    conn = index.db.conn
    assert conn.execute("SELECT COUNT(*), MAX(sha256) FROM instances").fetchone() == (1, "bb")
    assert conn.execute("SELECT instances FROM series").fetchone() == (1,)
    assert conn.execute("SELECT old_sha256, new_sha256 FROM instance_replacements").fetchall() == [("aa", "bb")]


def test_quiet_period_and_release_grace_queue_the_series_once(index):
    index.record(received("1.2.3.1"), now=100)
    assert index.queue_complete_series(5, 1, now=104) == []
    index.mark_released(["1.2.3"], now=104)
    assert index.queue_complete_series(5, 1, still_sending={"1.2.3"}, now=104.5) == []
    assert index.queue_complete_series(5, 1, still_sending={"1.2.3"}, now=105.1) == ["1.2.3"]  # quiet wins
    assert index.queue_complete_series(5, 1, now=200) == []
    assert states(index) == [("queued",)] and jobs(index) == [(1, "queued")]


def test_release_completes_before_the_quiet_period(index):
    index.record(received("1.2.3.1"), now=100)
    index.mark_released(["1.2.3"], now=100.2)
    assert index.queue_complete_series(5, 1, now=101.3) == ["1.2.3"]


def test_a_late_arrival_reopens_and_supersedes_the_waiting_job(index):
    index.record(received("1.2.3.1"), now=100)
    index.queue_complete_series(5, 1, now=106)
    index.record(received("1.2.3.2"), now=107)
    assert states(index) == [("receiving",)]
    assert jobs(index) == [(1, "superseded")]
    index.queue_complete_series(5, 1, now=113)
    assert jobs(index) == [(1, "superseded"), (2, "queued")]
    assert index.db.conn.execute("SELECT instances FROM series").fetchone() == (2,)


def test_priority_is_set_when_the_job_is_queued(index):
    emergency = received("1.2.9.1", series="1.2.9")
    index.record(emergency, now=100)
    index.record(received("1.2.8.1", series="1.2.8"), now=100)
    queued = index.queue_complete_series(5, 1, now=106, priority=lambda facts: 10 if facts.calling_ae == "CT" and facts.modality == "CT" else 0)
    assert sorted(queued) == ["1.2.8", "1.2.9"]
    assert {p for (p,) in index.db.conn.execute("SELECT priority FROM jobs")} == {10}


def test_a_sender_with_no_release_grace_completes_at_release_others_wait_theirs(index):
    """``dicom.release_grace_by_ae``: a sender known to send each series in one
    association is triaged at its release; another sender still gets the grace."""
    whole = InstanceArrived("1.2.5.1", "1.2.840.10008.5.1.4.1.1.2", "1.2", "1.2.5", "CT", "", "",
                            "1.2.840.10008.1.2.1", 10, "cc", Path("/y"), "WHOLE_CT", "assoc-2")
    index.record(whole, now=100)
    index.record(received("1.2.3.1"), now=100)
    index.mark_released(["1.2.5", "1.2.3"], now=100.5)
    grace = {"WHOLE_CT": 0.0}
    assert index.queue_complete_series(5, lambda ae: grace.get(ae, 1.0), now=100.5) == ["1.2.5"]
    assert index.queue_complete_series(5, lambda ae: grace.get(ae, 1.0), now=101.4) == []
    assert index.queue_complete_series(5, lambda ae: grace.get(ae, 1.0), now=101.5) == ["1.2.3"]


def test_status_tells_per_sender_which_series_were_split_or_reopened(index):
    from dataclasses import replace

    from appliance.status import senders

    index.record(replace(received("1.2.6.1", series="1.2.6"), calling_ae="WHOLE"), now=100)
    index.record(replace(received("1.2.6.2", series="1.2.6"), calling_ae="WHOLE"), now=100)
    index.record(replace(received("1.2.7.1", series="1.2.7"), calling_ae="ROUTER"), now=100)
    index.record(replace(received("1.2.7.2", series="1.2.7"), calling_ae="ROUTER", association_id="assoc-2"), now=101)
    index.queue_complete_series(5, 1, now=110)
    index.record(replace(received("1.2.7.3", series="1.2.7"), calling_ae="ROUTER", association_id="assoc-3"), now=111)
    index.queue_complete_series(5, 1, now=120)
    assert senders(index.db.conn) == {"ROUTER": {"series": 1, "split": 1, "reopened": 1},
                                      "WHOLE": {"series": 1, "split": 0, "reopened": 0}}


def test_each_senders_run_of_clean_series_is_counted_newest_first(index):
    """``clean_runs``: per calling AE, the newest series in a row that each came in one
    association and were never reopened; a split or reopened one ends the run, and a series
    still arriving is not judged yet."""
    from dataclasses import replace

    def series(ae: str, uid: str, at: float, associations: int = 1) -> None:
        for n in range(associations):
            index.record(replace(received(f"{uid}.{n}", series=uid), calling_ae=ae, association_id=f"{uid}-a{n}"), now=at)

    series("ROUTER", "9.1", 100)
    series("ROUTER", "9.2", 101, associations=2)  # split
    series("ROUTER", "9.3", 102)
    series("ROUTER", "9.4", 103)
    series("CT1", "8.1", 100)
    series("CT1", "8.2", 101)
    index.queue_complete_series(5, 1, now=110)
    assert index.clean_runs() == {"ROUTER": 2, "CT1": 2}
    index.record(replace(received("8.2.late", series="8.2"), calling_ae="CT1", association_id="late"), now=111)
    series("CT1", "8.3", 112)  # still arriving: not judged
    assert index.clean_runs() == {"ROUTER": 2, "CT1": 1}, "8.2 reopened: receiving again, 8.1 is the newest ended"
    index.queue_complete_series(5, 1, now=120)
    assert index.clean_runs() == {"ROUTER": 2, "CT1": 1}, "8.3 is clean, then 8.2 (reopened, generation 2) ends the run"


def test_a_sender_with_a_long_clean_run_completes_at_release_without_the_grace(index):
    from dataclasses import replace

    from appliance.config import DicomSettings

    settings = DicomSettings(release_grace_s=1.0, learn_grace_after_series=2)

    def grace(learned: dict[str, int]):  # read before the index takes its lock, as completion does
        return lambda ae: settings.release_grace_for(ae, learned.get(ae, 0))

    for n, at in enumerate((100, 110)):
        index.record(replace(received(f"7.{n}.1", series=f"7.{n}"), calling_ae="CT1"), now=at)
        index.mark_released([f"7.{n}"], now=at + 0.1)
        assert index.queue_complete_series(5, grace(index.clean_runs()), now=at + 1.0) == [], "still its grace"
        assert index.queue_complete_series(5, grace(index.clean_runs()), now=at + 1.2) == [f"7.{n}"]
    index.record(replace(received("7.9.1", series="7.9"), calling_ae="CT1"), now=120)
    index.record(replace(received("6.9.1", series="6.9"), calling_ae="NEW"), now=120)
    index.mark_released(["7.9", "6.9"], now=120.1)
    learned = index.clean_runs()
    assert learned == {"CT1": 2}
    assert index.queue_complete_series(5, grace(learned), now=120.1) == ["7.9"], "two clean series learned: no grace"
    assert index.queue_complete_series(5, grace(learned), now=121.0) == [], "a sender with no record waits its grace"
    assert index.queue_complete_series(5, grace(learned), now=121.2) == ["6.9"]

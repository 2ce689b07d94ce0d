"""Retention (issue 23): the pixel data of a final series whose results were all delivered
leaves the spool ``retention.pixel_days`` later, oldest first; a series with a send
pending or a dead letter, or still in flight, or too recent, is never touched; the index
rows stay and the audit log still verifies. Every time is injected."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from pydicom.uid import generate_uid

from appliance.audit.chain import verify_database
from appliance.config import RetentionSettings, load_settings
from appliance.outcome.retention import DAY_S, purge
from appliance.outcome.upkeep import RETENTION, Upkeep
from appliance.parts import Parts
from appliance.receive import spool
from appliance.receive.index import IngestIndex
from appliance.states import OutboxState, SeriesState
from tests.helpers.boxes import arrived
from tests.helpers.series import ct_dataset

NOW = dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC).timestamp()
WEEK = RetentionSettings(pixel_days=7)
OLD = NOW - 8 * DAY_S


@pytest.fixture
def parts(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    return Parts(load_settings())


def series_in(parts, state: SeriesState, final_at: float, outbox: OutboxState | None = OutboxState.SENT):
    """A two-slice series in the spool, indexed, in ``state`` since ``final_at``, with one
    result object in ``outbox`` state (or none). Returns (series UID, its files)."""
    db = parts.database()
    study, series = generate_uid(), generate_uid()
    files = []
    for i in range(2):
        ds = ct_dataset(study, series, i, size=8)
        path = spool.instance_path(parts.settings.spool_dir, study, series, str(ds.SOPInstanceUID))
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        os.utime(path, (final_at, final_at))
        IngestIndex(db).record(arrived(ds, path, "CT1", "assoc-1", "Head"), now=final_at)
        files.append(path)
    with db.conn:
        db.conn.execute("UPDATE series SET state = ?, updated_at = ? WHERE series_instance_uid = ?",
                        (state, final_at, series))
        if outbox is not None:
            db.conn.execute(
                "INSERT INTO outbox (path, sop_class_uid, sop_instance_uid, study_instance_uid, destination, state, "
                "next_attempt_at, created_at, updated_at) VALUES ('r.dcm', '1.2', ?, ?, 'PACS@h:104', ?, 0, ?, ?)",
                (generate_uid(), study, outbox, final_at, final_at))
    return series, files


def purged(parts) -> set[str]:
    return {row[0] for row in parts.database().conn.execute("SELECT series_instance_uid FROM purged_series")}


def test_only_delivered_final_series_past_the_period_lose_their_pixel_data(parts):
    delivered, delivered_files = series_in(parts, SeriesState.TRIAGED, OLD)
    no_destination, _ = series_in(parts, SeriesState.NOT_ELIGIBLE, OLD, outbox=None)
    failed, _ = series_in(parts, SeriesState.FAILED, OLD - DAY_S)
    kept = {
        "pending send": series_in(parts, SeriesState.TRIAGED, OLD, OutboxState.PENDING),
        "dead letter": series_in(parts, SeriesState.TRIAGED, OLD, OutboxState.DEAD),
        "too recent": series_in(parts, SeriesState.TRIAGED, NOW - 6 * DAY_S),
        "in flight": series_in(parts, SeriesState.RECEIVING, OLD),
    }
    db = parts.database()
    instances_before = db.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]

    done = purge(db.conn, WEEK, NOW)

    assert (done.series, done.files) == (3, 6)
    assert purged(parts) == {delivered, no_destination, failed}
    assert not any(path.exists() for path in delivered_files)
    assert not delivered_files[0].parent.exists()  # the emptied series folder goes too
    for why, (_series, files) in kept.items():
        assert all(path.exists() for path in files), why
    assert db.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == instances_before
    assert verify_database(db) == []
    assert db.conn.execute("SELECT COUNT(*) FROM audit_log WHERE kind = 'retention-purge'").fetchone()[0] == 1


def test_a_second_run_finds_nothing_and_audits_nothing(parts):
    series_in(parts, SeriesState.TRIAGED, OLD)
    db = parts.database()
    purge(db.conn, WEEK, NOW)
    audit_rows = db.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    assert purge(db.conn, WEEK, NOW + 3600).series == 0
    assert db.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == audit_rows


def test_oldest_first_and_a_file_rewritten_after_the_cutoff_is_kept(parts):
    older, _ = series_in(parts, SeriesState.TRIAGED, OLD - DAY_S)
    newer, files = series_in(parts, SeriesState.TRIAGED, OLD)
    os.utime(files[0], (NOW, NOW))  # a resend replaced it a moment ago
    db = parts.database()
    assert purge(db.conn, RetentionSettings(pixel_days=7, batch_series=1), NOW).series == 1
    assert purged(parts) == {older}
    assert purge(db.conn, WEEK, NOW).files == 1
    assert files[0].exists() and not files[1].exists()


def test_a_file_that_cannot_be_deleted_leaves_its_series_for_the_next_run(parts, monkeypatch):
    series, files = series_in(parts, SeriesState.TRIAGED, OLD)
    real_unlink = type(files[0]).unlink

    def refuse(path, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(type(files[0]), "unlink", refuse)
    db = parts.database()
    assert purge(db.conn, WEEK, NOW).series == 0 and purged(parts) == set()
    monkeypatch.setattr(type(files[0]), "unlink", real_unlink)
    assert purge(db.conn, WEEK, NOW).series == 1 and purged(parts) == {series}


def test_the_worker_upkeep_runs_retention(parts):
    series, files = series_in(parts, SeriesState.TRIAGED, OLD)
    settings = parts.settings
    upkeep = Upkeep(parts.database(), settings.drift, 3600, 3600, WEEK)
    assert RETENTION in upkeep.run_due(NOW)
    assert not files[0].exists() and purged(parts) == {series}
    assert parts.settings.retention.pixel_days == 7.0  # the shipped default

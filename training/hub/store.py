"""The hub's database: one schema and one set of SQL statements on SQLite or PostgreSQL.

SQLite (a file in the data dir) is the default; ``postgresql://`` URLs go through psycopg
when a fleet outgrows one file. Statements use ``?`` placeholders and only SQL both
engines speak (``ON CONFLICT DO NOTHING``, ``BIGINT``, ``DOUBLE PRECISION``); the
PostgreSQL connection rewrites the placeholders. One connection per hub process, used
under a lock: the hub's load is a few requests per box per hour.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

MIGRATIONS: tuple[str, ...] = (
    # 1: enrolment tokens, devices and their pinned keys, seen nonces, reports, releases.
    """
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        ring TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        used_at DOUBLE PRECISION,
        device_id TEXT
    );
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL UNIQUE,
        site TEXT NOT NULL,
        ring TEXT NOT NULL,
        enrolled_at DOUBLE PRECISION NOT NULL,
        last_checkin DOUBLE PRECISION,
        appliance_version TEXT,
        models TEXT,
        metadata_refreshed_at DOUBLE PRECISION,
        release_error TEXT,
        audit_seq BIGINT,
        audit_hash TEXT
    );
    CREATE TABLE nonces (
        device_id TEXT NOT NULL,
        nonce TEXT NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device_id, nonce)
    );
    CREATE INDEX nonces_seen ON nonces (seen_at);
    CREATE TABLE reports (
        report_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        day TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        audit_seq BIGINT NOT NULL,
        audit_hash TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX reports_device_day ON reports (device_id, day);
    CREATE TABLE report_models (
        report_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        day TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        series BIGINT,
        flagged BIGINT,
        not_analysed BIGINT,
        features TEXT NOT NULL,
        PRIMARY KEY (report_id, model_id, model_version)
    );
    CREATE INDEX report_models_device ON report_models (device_id, model_id, model_version, day);
    CREATE TABLE releases (
        target TEXT PRIMARY KEY,
        model_id TEXT NOT NULL,
        version TEXT NOT NULL,
        ring TEXT NOT NULL,
        min_appliance_version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        length BIGINT NOT NULL,
        published_at DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: the box's own active drift alerts, as its last check-in listed them (JSON).
    """
    ALTER TABLE devices ADD COLUMN drift_alerts TEXT
    """,
    # 3: a report is known by its device and its id together: an id another device sends
    # (they are derived from device ids, which are no secret) claims nothing.
    """
    CREATE TABLE reports_by_device (
        report_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        day TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        audit_seq BIGINT NOT NULL,
        audit_hash TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (device_id, report_id)
    );
    INSERT INTO reports_by_device SELECT report_id, device_id, day, received_at, audit_seq, audit_hash, body
        FROM reports;
    DROP TABLE reports;
    ALTER TABLE reports_by_device RENAME TO reports;
    CREATE INDEX reports_device_day ON reports (device_id, day);
    CREATE TABLE report_models_by_device (
        report_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        day TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        series BIGINT,
        flagged BIGINT,
        not_analysed BIGINT,
        features TEXT NOT NULL,
        PRIMARY KEY (device_id, report_id, model_id, model_version)
    );
    INSERT INTO report_models_by_device SELECT report_id, device_id, day, model_id, model_version, series,
        flagged, not_analysed, features FROM report_models;
    DROP TABLE report_models;
    ALTER TABLE report_models_by_device RENAME TO report_models;
    CREATE INDEX report_models_device ON report_models (device_id, model_id, model_version, day)
    """,
    # 4: the operators' sign-in for the fleet page (hashes of their tokens).
    """
    CREATE TABLE operator_tokens (
        token_hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )
    """,
    # 5: the category labels operators allowed beyond the defaults (training.hub.categories).
    """
    CREATE TABLE allowed_categories (
        feature TEXT NOT NULL,
        label TEXT NOT NULL,
        added_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (feature, label)
    )
    """,
    # 6: what the hub found comparing a box's audit chain with the anchor it holds
    # (devices.audit_seq/audit_hash): the first problem, kept until an operator acts.
    """
    ALTER TABLE devices ADD COLUMN audit_problem TEXT;
    ALTER TABLE devices ADD COLUMN audit_checked_at DOUBLE PRECISION
    """,
    # 7: field evidence (reports of schema 2), one row per report, model version and role;
    # the card's expected flag-rate interval and the withdrawal of each release; every
    # promotion decision.
    """
    CREATE TABLE report_field (
        report_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        day TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        role TEXT NOT NULL,
        k BIGINT NOT NULL,
        first_day TEXT NOT NULL,
        scored BIGINT,
        flagged BIGINT,
        not_analysed BIGINT,
        ttr_p50 DOUBLE PRECISION,
        ttr_p95 DOUBLE PRECISION,
        both_flagged BIGINT,
        shadow_only BIGINT,
        active_only BIGINT,
        neither_flagged BIGINT,
        flag_agreed BIGINT,
        flag_disagreed BIGINT,
        missed_finding BIGINT,
        PRIMARY KEY (device_id, report_id, model_id, model_version, role)
    );
    CREATE INDEX report_field_release ON report_field (model_id, model_version, role, device_id, day);
    ALTER TABLE releases ADD COLUMN expected_flag_low DOUBLE PRECISION;
    ALTER TABLE releases ADD COLUMN expected_flag_high DOUBLE PRECISION;
    ALTER TABLE releases ADD COLUMN withdrawn_at DOUBLE PRECISION;
    CREATE TABLE promotions (
        id BIGINT PRIMARY KEY,
        target TEXT NOT NULL,
        from_ring TEXT NOT NULL,
        to_ring TEXT NOT NULL,
        decided_at DOUBLE PRECISION NOT NULL,
        allowed BIGINT NOT NULL,
        evaluation TEXT NOT NULL
    )
    """,
    # 8: the card's bound on the not-analysed rate (its mixed stream through a real
    # appliance: the Wilson interval's upper end), which promotion holds the field to.
    """
    ALTER TABLE releases ADD COLUMN expected_not_analysed_high DOUBLE PRECISION
    """,
    # 9: an operator's clearing of a device's audit problem (JSON: when, why, the problem).
    """
    ALTER TABLE devices ADD COLUMN audit_cleared TEXT
    """,
)


class HubDatabase:
    """A connection to SQLite or PostgreSQL with one way to run statements.

    Parameters
    ----------
    url : str
        A ``postgresql://`` URL, or a path to the SQLite file.
    """

    def __init__(self, url: str):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.RLock()
        if self.postgres:
            import psycopg

            self._conn = psycopg.connect(url, autocommit=True)
        else:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(url, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        with self._lock:
            return self._conn.execute(self._sql(sql), tuple(params)).rowcount

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return list(self._conn.execute(self._sql(sql), tuple(params)).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    @contextmanager
    def transaction(self) -> Iterator["HubDatabase"]:
        """All statements inside commit together or not at all (and hold the lock)."""
        with self._lock:
            if self.postgres:
                with self._conn.transaction():
                    yield self
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self) -> None:
        with self.transaction():
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self.one("SELECT version FROM schema_version")
            if row is None:
                self.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = row[0] if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self.execute(statement)
                self.execute("UPDATE schema_version SET version = ?", (number,))


def open_hub_database(data_dir: Path, database_url: str | None = None) -> HubDatabase:
    """The hub's database: ``database_url`` if given, else ``DATA_DIR/hub.db``."""
    return HubDatabase(database_url or str(data_dir / "hub.db"))

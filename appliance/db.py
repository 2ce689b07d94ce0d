"""The SQLite database: one file, WAL, ``synchronous=FULL``, numbered migrations.

Every process opens its own connection with :func:`open_database`; each table family has
one writing process (ingest tables: the listener; jobs once claimed: the worker).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from appliance import __version__
from appliance.errors import StorageError

LOG = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: durable ingest, the job queue and the audit log.
    """
    CREATE TABLE instances (
        sop_instance_uid TEXT PRIMARY KEY,
        study_instance_uid TEXT NOT NULL,
        series_instance_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        path TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        association_id TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX instances_series ON instances (series_instance_uid);
    CREATE TABLE instance_replacements (
        id INTEGER PRIMARY KEY,
        sop_instance_uid TEXT NOT NULL,
        old_sha256 TEXT NOT NULL,
        new_sha256 TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        association_id TEXT NOT NULL,
        replaced_at REAL NOT NULL
    );
    CREATE TABLE series (
        series_instance_uid TEXT PRIMARY KEY,
        study_instance_uid TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        body_part TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        calling_ae TEXT NOT NULL DEFAULT '',
        instances INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        reason TEXT,
        generation INTEGER NOT NULL DEFAULT 0,
        first_received_at REAL NOT NULL,
        last_received_at REAL NOT NULL,
        released_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX series_state ON series (state);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        series_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'superseded')),
        priority INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at REAL,
        reason TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_state ON jobs (state, priority, id);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    """,
    # 2: the result outbox, one row per (result object file, destination "AE@host:port").
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (sop_instance_uid, destination)
    );
    CREATE INDEX outbox_due ON outbox (destination, state, next_attempt_at);
    """,
    # 3: installed models, inference results, and the series' triage outcome.
    """
    CREATE TABLE models (
        id TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('installed', 'shadow', 'active', 'retired')),
        package_sha256 TEXT NOT NULL,
        path TEXT NOT NULL,
        manifest TEXT NOT NULL,
        selection TEXT,
        installed_at REAL NOT NULL,
        changed_at REAL NOT NULL,
        PRIMARY KEY (id, version)
    );
    CREATE TABLE inference_results (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('active', 'shadow')),
        series_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        score REAL NOT NULL,
        threshold REAL NOT NULL,
        flag INTEGER NOT NULL,
        superseded INTEGER NOT NULL DEFAULT 0,
        audit_seq INTEGER NOT NULL,
        sr_instance_uid TEXT,
        sc_instance_uid TEXT,
        created_at REAL NOT NULL,
        UNIQUE (job_id, role)
    );
    CREATE INDEX inference_results_series ON inference_results (series_instance_uid);
    ALTER TABLE series ADD COLUMN flag INTEGER;
    ALTER TABLE series ADD COLUMN score REAL;
    ALTER TABLE series ADD COLUMN model TEXT
    """,
    # 4: the hub sync: the report outbox (written only by appliance.sync.report_queue), the
    # releases the box has acted on (appliance.sync.releases) and each sync round
    # (appliance.sync.round).
    """
    CREATE TABLE sync_reports (
        seq INTEGER PRIMARY KEY,
        report_id TEXT NOT NULL UNIQUE,
        day TEXT NOT NULL,
        body TEXT NOT NULL,
        audit_seq INTEGER NOT NULL,
        audit_hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'rejected')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        queued_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX sync_reports_state ON sync_reports (state, seq);
    CREATE TABLE sync_releases (
        target TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        model_id TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('shadow', 'refused')),
        reason TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (target, sha256)
    );
    CREATE TABLE sync_rounds (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        pushed INTEGER NOT NULL,
        push_error TEXT,
        metadata_refreshed INTEGER NOT NULL,
        release_error TEXT,
        staged TEXT NOT NULL
    )
    """,
    # 5: drift monitoring (written only by appliance/drift/tables.py): per-series features
    # (no UIDs: the job id links back inside the box), each closed window's judgement per
    # feature, the monitor's state per model version, and alerts raised and cleared.
    """
    CREATE TABLE drift_series (
        job_id INTEGER PRIMARY KEY,
        day TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        outcome TEXT NOT NULL,
        score REAL,
        flag INTEGER,
        features TEXT,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX drift_series_model_day ON drift_series (model_id, model_version, day);
    CREATE TABLE drift_evaluations (
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        day TEXT NOT NULL,
        feature TEXT NOT NULL,
        statistic TEXT NOT NULL,
        value REAL NOT NULL,
        threshold REAL NOT NULL,
        exceeded INTEGER NOT NULL,
        source TEXT NOT NULL,
        series INTEGER NOT NULL,
        details TEXT NOT NULL,
        PRIMARY KEY (model_id, model_version, day, feature)
    );
    CREATE TABLE drift_monitor (
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        last_day TEXT NOT NULL,
        baseline TEXT,
        features TEXT NOT NULL,
        PRIMARY KEY (model_id, model_version)
    );
    CREATE TABLE drift_alerts (
        id INTEGER PRIMARY KEY,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        feature TEXT NOT NULL,
        statistic TEXT NOT NULL,
        value REAL NOT NULL,
        threshold REAL NOT NULL,
        raised_day TEXT NOT NULL,
        raised_seq INTEGER NOT NULL,
        cleared_day TEXT,
        cleared_seq INTEGER
    )
    """,
    # 6: the web: users, sessions, API tokens, sign-in attempts, radiologist feedback, and
    # the worklist's per-study summary (a cache of series rows plus header fields).
    """
    CREATE TABLE web_users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('radiologist', 'biomed', 'admin')),
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE web_sessions (
        token_sha256 TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES web_users (id),
        csrf_token TEXT NOT NULL,
        address TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        ended_at REAL,
        end_reason TEXT
    );
    CREATE INDEX web_sessions_user ON web_sessions (user_id);
    CREATE TABLE web_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('radiologist', 'biomed', 'admin')),
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE web_login_attempts (
        id INTEGER PRIMARY KEY,
        user_name TEXT NOT NULL,
        address TEXT NOT NULL,
        ok INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX web_login_attempts_user ON web_login_attempts (user_name, at);
    CREATE INDEX web_login_attempts_address ON web_login_attempts (address, at);
    CREATE TABLE web_feedback (
        id INTEGER PRIMARY KEY,
        study_instance_uid TEXT NOT NULL,
        series_instance_uid TEXT NOT NULL,
        inference_result_id INTEGER,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        flag INTEGER,
        verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'false-positive', 'missed-finding', 'image-problem')),
        comment TEXT NOT NULL DEFAULT '',
        user_name TEXT NOT NULL,
        audit_seq INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX web_feedback_model ON web_feedback (model_id, model_version);
    CREATE INDEX web_feedback_study ON web_feedback (study_instance_uid);
    CREATE TABLE web_studies (
        study_instance_uid TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        flag_rank INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        reason TEXT,
        modalities TEXT NOT NULL,
        models TEXT NOT NULL,
        series_count INTEGER NOT NULL,
        received_at REAL NOT NULL,
        result_at REAL,
        time_to_result_s REAL,
        score REAL,
        first_series_uid TEXT NOT NULL,
        header_read INTEGER NOT NULL DEFAULT 0,
        patient_name TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        accession TEXT NOT NULL DEFAULT '',
        study_description TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL
    );
    CREATE INDEX web_studies_order ON web_studies (flag_rank DESC, priority DESC, received_at DESC);
    CREATE INDEX web_studies_received ON web_studies (received_at);
    CREATE INDEX web_studies_state ON web_studies (state, flag_rank DESC, priority DESC, received_at DESC);
    CREATE INDEX web_studies_updated ON web_studies (updated_at);
    CREATE INDEX jobs_series ON jobs (series_instance_uid);
    CREATE INDEX series_study ON series (study_instance_uid);
    CREATE INDEX series_updated ON series (updated_at)
    """,
    # 7: results PACS can trust: which result replaced which (supersession), the
    # "not analysed" notices sent, and outbox rows whose dead letter raises an alert.
    """
    ALTER TABLE inference_results ADD COLUMN superseded_by_sr TEXT;
    CREATE TABLE notices (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL UNIQUE,
        series_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        reason_code TEXT NOT NULL,
        reason TEXT NOT NULL,
        sr_instance_uid TEXT NOT NULL,
        audit_seq INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX notices_series ON notices (series_instance_uid);
    ALTER TABLE outbox ADD COLUMN alert INTEGER NOT NULL DEFAULT 0
    """,
    # 8: each destination's circuit breaker as the sender last saw it (written only by
    # appliance.send.outbox, for the admin page; the sender keeps the live one in memory).
    """
    CREATE TABLE send_lanes (
        destination TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        threshold INTEGER NOT NULL,
        cooldown_s REAL NOT NULL,
        opened_at REAL,
        not_before REAL NOT NULL,
        last_error TEXT,
        updated_at REAL NOT NULL
    )
    """,
    # 9: when the worker's scheduled upkeep (study summaries, drift windows) last ran, so
    # the pages that show its figures can say how old they are (appliance.outcome.upkeep).
    """
    CREATE TABLE upkeep (
        task TEXT PRIMARY KEY,
        ran_at REAL NOT NULL
    )
    """,
    # 10: retention: the series whose spooled pixel data was deleted (the index rows stay).
    """
    CREATE TABLE purged_series (
        series_instance_uid TEXT PRIMARY KEY,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        purged_at REAL NOT NULL
    )
    """,
    # 11: outbound alerts, one row per audit event that needs a person (appliance.send.alerts);
    # the events from before alerts existed count as delivered.
    """
    CREATE TABLE alerts (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    INSERT INTO alerts (seq, kind, payload, created_at, delivered_at)
        SELECT seq, kind, payload, 0, 0 FROM audit_log
        WHERE kind IN ('alert-result-dead-lettered', 'drift-alert', 'alert-disk-below-floor')
    """,
    # 12: a user's credentials epoch, moved on a password reset and on disabling; a session
    # made under an earlier epoch is over (appliance.web.accounts, appliance.web.sessions).
    """
    ALTER TABLE web_users ADD COLUMN credentials_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE web_sessions ADD COLUMN credentials_epoch INTEGER NOT NULL DEFAULT 0
    """,
    # 13: device cookies: a browser that signed in as a user before is throttled on its own
    # failures, not locked out by anyone's guesses at that user or from its address
    # (appliance.web.sessions).
    """
    CREATE TABLE web_login_devices (
        token_sha256 TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    ALTER TABLE web_login_attempts ADD COLUMN device_sha256 TEXT;
    CREATE INDEX web_login_attempts_device ON web_login_attempts (device_sha256, at)
    """,
    # 14: releases the hub withdrew, as this box was told (written only by
    # appliance.sync.withdrawals): dropped from shadow, or left active for a person to decide.
    """
    CREATE TABLE sync_withdrawals (
        model_id TEXT NOT NULL,
        version TEXT NOT NULL,
        state_then TEXT NOT NULL CHECK (state_then IN ('installed', 'shadow', 'active', 'retired')),
        told_at REAL NOT NULL,
        PRIMARY KEY (model_id, version)
    )
    """,
    # 15: the install's UID epochs: `appliance restore` starts a new one, so a result UID
    # derived after a restore never repeats one the box issued before it (appliance.installation).
    """
    CREATE TABLE uid_epochs (
        id INTEGER PRIMARY KEY,
        epoch TEXT NOT NULL UNIQUE,
        reason TEXT NOT NULL,
        started_at REAL NOT NULL
    )
    """,
    # 16: each running worker's heartbeat: when its loop last advanced and by when it will
    # again (appliance.triage.heartbeat); /readyz and the supervisor of `appliance serve` read it.
    """
    CREATE TABLE worker_heartbeats (
        name TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        beat_at REAL NOT NULL,
        expect_by REAL NOT NULL,
        job_id INTEGER
    )
    """,
    # 17: when the DICOM listener's process was up (appliance.uptime): a span per start,
    # its end moved every every_s, marked stopped on a clean stop; the compliance report's
    # downtime is the time no span covers.
    """
    CREATE TABLE uptime_spans (
        id INTEGER PRIMARY KEY,
        component TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        alive_at REAL NOT NULL,
        every_s REAL NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0
    )
    """,
)


def open_database(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the appliance database and bring its schema up to date.

    Parameters
    ----------
    path : Path
        The SQLite file.

    Returns
    -------
    sqlite_utils.Database
        In WAL mode with ``synchronous=FULL``, autocommit (use explicit transactions).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        _migrate(conn)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    return sqlite_utils.Database(conn)


def dated_backup_path(folder: Path, now: datetime) -> Path:
    """``<folder>/appliance-<UTC time>.db`` (pure): backups sort by when they were taken."""
    return folder / f"appliance-{now:%Y%m%dT%H%M%SZ}.db"


#: The table a backup carries that the live database never has: where and by what it was
#: taken (``data_dir``, ``version``, ``schema``, ``taken_at``, ``install_id``).
BACKUP_MANIFEST = "backup_manifest"

#: The columns that name a file under the data folder; a restore at another path moves them.
PATH_COLUMNS = (("instances", "path"), ("outbox", "path"), ("models", "path"))


def backup_database(conn: sqlite3.Connection, target: Path, manifest: dict[str, str] | None = None) -> None:
    """Copy the database into the new file ``target`` (0600) with SQLite's online backup
    API: a consistent snapshot of what is committed, taken while the services keep
    writing. The copy is one self-contained file (no WAL), carries ``manifest`` in its
    ``backup_manifest`` table, passes ``integrity_check`` and is fsynced before it takes
    its name; nothing is left behind when any step fails.

    Raises
    ------
    StorageError
        ``target`` exists (a backup never overwrites one), or the copy failed or is damaged.
    """
    if target.exists():
        raise StorageError(f"{target} exists; a backup never overwrites a file")
    partial = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        with closing(sqlite3.connect(partial, isolation_level=None)) as copy:
            conn.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            if manifest is not None:
                copy.execute(f"CREATE TABLE {BACKUP_MANIFEST} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                copy.executemany(f"INSERT INTO {BACKUP_MANIFEST} VALUES (?, ?)", sorted(manifest.items()))
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise StorageError(f"the copy in {partial} fails integrity_check: {check}")
        fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, target)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"backup to {target} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def backup_manifest(conn: sqlite3.Connection) -> dict[str, str] | None:
    """The manifest of the backup open on ``conn``; ``None`` when it has none (taken by
    hand, or by a release before 0.2.1)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (BACKUP_MANIFEST,))
    if found.fetchone() is None:
        return None
    return dict(conn.execute(f"SELECT key, value FROM {BACKUP_MANIFEST}").fetchall())


def rebase_paths(conn: sqlite3.Connection, old: list[str], new: Path) -> int:
    """Move every path under one of the data folders ``old`` to the same place under
    ``new`` (in the caller's transaction), drop the backup's manifest, and return how many
    paths moved. Paths under no folder in ``old`` are left as they are."""
    moved = 0
    for prefix in dict.fromkeys(p.rstrip("/") + "/" for p in old if p):
        if prefix == str(new).rstrip("/") + "/":
            continue
        for table, column in PATH_COLUMNS:
            moved += conn.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                (str(new).rstrip("/") + "/", len(prefix) + 1, len(prefix), prefix),
            ).rowcount
    conn.execute(f"DROP TABLE IF EXISTS {BACKUP_MANIFEST}")
    return moved


#: Callbacks waiting for the transaction open on a connection (by ``id``) to commit.
_after_commit: dict[int, dict[str, Callable[[], None]]] = {}


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception.

    IMMEDIATE takes the write lock at the start, so a read-then-write inside cannot be
    raced by another connection. Callbacks registered with :func:`after_commit` run after
    the ``COMMIT``, and are dropped with a rollback.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        _after_commit.pop(id(conn), None)
        conn.execute("ROLLBACK")
        raise
    callbacks = _after_commit.pop(id(conn), {})
    conn.execute("COMMIT")
    for callback in callbacks.values():
        callback()


@contextmanager
def waiting_at_most(conn: sqlite3.Connection, milliseconds: int) -> Iterator[sqlite3.Connection]:
    """Inside, a locked database makes ``conn`` give up after ``milliseconds`` instead of
    its usual 30 s; the usual wait is back afterwards."""
    usual = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
    try:
        yield conn
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(usual)}")


def after_commit(conn: sqlite3.Connection, key: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction open on ``conn`` has committed (at once when
    none is open). A later callback under the same ``key`` replaces an earlier one, so a
    transaction that changes a thing many times acts on it once, on its last state."""
    if conn.in_transaction:
        _after_commit.setdefault(id(conn), {})[key] = callback
    else:
        callback()


def database_file(conn: sqlite3.Connection) -> Path | None:
    """The file of ``conn``'s main database; ``None`` for an in-memory one."""
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    return Path(name) if name else None


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date, logging each step, after a backup of the database as
    it was (:func:`backup_before_migrating`); refuse a schema newer than this code (a
    downgrade without restoring the backup taken before the upgrade)."""
    backup_before_migrating(conn)
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StorageError(
                f"the database has schema {version}, newer than the {len(MIGRATIONS)} appliance {__version__} "
                "knows: run the release that wrote it, or restore the backup taken before that upgrade"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            LOG.info("database schema migrated to %d", number)


def backup_before_migrating(conn: sqlite3.Connection) -> Path | None:
    """Back the database up before this release migrates it: into
    ``<data folder>/backups/appliance-schema-<old>-before-<new>-<UTC time>.db``, with the
    manifest ``appliance restore`` reads. Nothing for a new (empty) or current database,
    nor one in memory. Two processes starting together may both write one; each is whole.

    Returns
    -------
    Path or None
        The backup written.

    Raises
    ------
    StorageError
        The backup could not be written (the migration does not run without one).
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    database = database_file(conn)
    if database is None or version == 0 or version >= len(MIGRATIONS):
        return None
    data_dir = database.parent
    now = datetime.now(UTC)
    target = data_dir / "backups" / f"appliance-schema-{version}-before-{len(MIGRATIONS)}-{now:%Y%m%dT%H%M%S.%fZ}.db"
    identity = data_dir / "install-id"
    manifest = {
        "data_dir": str(data_dir),
        "data_dir_resolved": str(data_dir.resolve()),
        "version": __version__,
        "schema": str(version),
        "taken_at": now.isoformat(),
        "install_id": identity.read_text().strip() if identity.exists() else "",
        "reason": f"before appliance {__version__} migrated schema {version} to {len(MIGRATIONS)}",
    }
    backup_database(conn, target, manifest)
    LOG.info("database backed up to %s before migrating schema %d to %d", target, version, len(MIGRATIONS))
    return target

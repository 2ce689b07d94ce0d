"""Test helpers for the hub: a real hub process on loopback (SQLite or a PostgreSQL cluster
the tests start), appliance settings for a data dir, valid anonymised reports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from functools import partial
from pathlib import Path

import httpx

from appliance.config import Settings, load_settings
from scripts.harness import free_port, wait_until
from training.hub.store import HubDatabase

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "firmware-config" / "models"
DEMO_KEY = SHIPPED / "demo-signing.pub"
#: The shipped packages, whichever versions ship, and how the registry names them.
HEAD_PACKAGE = next(SHIPPED.glob("head-ct-ich-demo-*.tar"))
HEAD_VERSION = HEAD_PACKAGE.stem.removeprefix("head-ct-ich-demo-")
HEAD_LABEL = f"head-ct-ich-demo {HEAD_VERSION}"
CHEST_PACKAGE = next(SHIPPED.glob("chest-cr-pneumothorax-demo-*.tar"))
CHEST_VERSION = CHEST_PACKAGE.stem.removeprefix("chest-cr-pneumothorax-demo-")
CHEST_LABEL = f"chest-cr-pneumothorax-demo {CHEST_VERSION}"


#: Hub tests wait longer than the harness default: a hub start publishes and signs.
wait_for = partial(wait_until, timeout=90.0)


class HubProcess:
    """``python -m training.hub`` as a child process."""

    def __init__(self, data_dir: Path, database_url: str | None):
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = data_dir.parent / f"hub-{self.port}.log"

    def _db_args(self) -> list[str]:
        return ["--database-url", self.database_url] if self.database_url else []

    def start(self) -> "HubProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "training.hub", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--refresh-interval-s", "0", *self._db_args()],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what="the hub to answer /healthz")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command, *rest = args
        return subprocess.run([sys.executable, "-m", "training.hub", command, "--data-dir", str(self.data_dir),
                               *self._db_args(), *rest], cwd=REPO, capture_output=True, text=True, check=check)

    def token(self, ring: str = "all", site: str = "Test site") -> str:
        return self.admin("token", "--ring", ring, "--site", site).stdout.strip().splitlines()[-1]

    def fleet_page(self) -> str:
        """The fleet page as an operator sees it."""
        operator = self.admin("operator-token", "--name", "tests").stdout.strip().splitlines()[-1]
        return httpx.get(f"{self.url}/fleet", headers={"Authorization": f"Bearer {operator}"}).text

    def publish(self, package: Path, ring: str = "all") -> str:
        return self.admin("publish", str(package), "--ring", ring, "--trusted-key", str(DEMO_KEY)).stdout

    def database(self) -> HubDatabase:
        return HubDatabase(self.database_url or str(self.data_dir / "hub.db"))

    def report_ids(self) -> list[str]:
        db = self.database()
        try:
            return [r[0] for r in db.rows("SELECT report_id FROM reports")]
        finally:
            db.close()


class PostgresCluster:
    """A throwaway PostgreSQL cluster from Debian's binaries, run as the ``postgres`` user
    when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = found[-1].parent if found else Path(shutil.which("initdb")).parent

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgresCluster":
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "120", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return self

    def new_database(self) -> str:
        import psycopg

        name = f"hub_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def box_settings(data_dir: Path, **overrides: str) -> Settings:
    """An appliance's settings for its own data dir, retrying fast (tests, not production)."""
    environ = {
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_MODELS_TRUSTED_KEYS": str(DEMO_KEY),
        "APPLIANCE_SYNC_RETRY_INITIAL_S": "0.05",
        "APPLIANCE_SYNC_RETRY_MAX_S": "0.2",
        "APPLIANCE_SYNC_ROUND_ATTEMPTS": "2",
        "APPLIANCE_SYNC_TIMEOUT_S": "20",
        **{f"APPLIANCE_{k.upper()}": v for k, v in overrides.items()},
    }
    return load_settings(environ=environ)


def box_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for ``python -m appliance.cli``."""
    return {**os.environ, "APPLIANCE_DATA_DIR": str(settings.data_dir),
            "APPLIANCE_MODELS_TRUSTED_KEYS": str(DEMO_KEY),
            "APPLIANCE_SYNC_RETRY_INITIAL_S": str(settings.sync.retry_initial_s),
            "APPLIANCE_SYNC_RETRY_MAX_S": str(settings.sync.retry_max_s),
            "APPLIANCE_SYNC_ROUND_ATTEMPTS": str(settings.sync.round_attempts),
            "APPLIANCE_SYNC_BATCH_SIZE": str(settings.sync.batch_size)}


def make_report(day: str = "2026-11-20", flagged: int | None = 12, **model: object) -> dict:
    """A valid anonymised drift report (schema triage-drift-report/1)."""
    return {
        "schema": "triage-drift-report/1", "report_id": uuid.uuid4().hex, "day": day,
        "appliance_version": "0.1.0", "k": 10, "noise_epsilon": None,
        "models": [{"model_id": "head-ct-ich-demo", "model_version": "1.0.0", "series": 40, "flagged": flagged,
                    "not_analysed": {"wrong-body-part": None, "decode-failed": 11},
                    "features": {"hu_mean": {"kind": "histogram", "edges": [0.0, 40.0, 80.0],
                                             "counts": [25, 15]}}, **model}]}

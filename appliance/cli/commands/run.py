"""``serve``, ``listener``, ``worker``, ``web``: the long-running components."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

from appliance import at_rest, sd_notify
from appliance.audit.chain import append
from appliance.blas import one_blas_thread
from appliance.cli.commands.common import StopRequest, on_stop_signal
from appliance.errors import StorageError
from appliance.parts import Parts
from appliance.uptime import UptimeRecorder

LOG = logging.getLogger("appliance.run")


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "serve", help="the listener and the web server, and the worker with the sender in a child process"
    ).set_defaults(func=serve)
    sub.add_parser("listener", help="run the DICOM listener").set_defaults(func=listener)
    sub.add_parser("worker", help="run the inference worker and the result sender").set_defaults(func=worker)
    sub.add_parser("web", help="run the web pages, API, /healthz, /readyz and /metrics").set_defaults(func=web)


def require_encrypted_data(parts: Parts, component: str) -> at_rest.AtRest:
    """Refuse to start on a data folder that is not encrypted at rest, unless
    ``allow_unencrypted``: then run, with a warning in the log and an audit event."""
    found = at_rest.inspect(parts.settings.data_dir)
    if found.encrypted:
        LOG.info("%s: data folder %s", component, found.words())
        return found
    if not parts.settings.allow_unencrypted:
        raise StorageError(
            f"{component}: data folder {found.words()}. Put it on an encrypted volume (an fscrypt policy on "
            "the folder, or LUKS under its file system), or set allow_unencrypted = true "
            "(APPLIANCE_ALLOW_UNENCRYPTED=true) to run without encryption"
        )
    LOG.warning(
        "%s: THE DATA FOLDER IS NOT ENCRYPTED AT REST: %s; running because allow_unencrypted = true",
        component,
        found.words(),
    )
    append(
        parts.database(),
        "storage-unencrypted",
        {"component": component, "data_dir": found.path, "mount_point": found.mount_point, "fstype": found.fstype},
    )
    return found


def serve(args: argparse.Namespace, parts: Parts) -> int:
    """The listener and the web server here; the worker and the sender in a child process
    with a memory limit."""
    from appliance.triage.supervisor import WorkerProcess
    from appliance.web.server import start_in_thread

    require_encrypted_data(parts, "serve")
    stopping = StopRequest()
    dicom = parts.listener()
    check, killed = hang_check(parts)
    child = WorkerProcess(parts.settings.worker.memory_limit_mb, hung=check, killed=killed)
    dicom.start()
    up = UptimeRecorder(parts.database().conn, "serve")
    up.start()
    child.start()
    server, thread = start_in_thread(parts)
    sd_notify.notify("READY=1")  # the listener's completion loop feeds the watchdog
    LOG.info("serve: %s received; stopping the web server, the worker and the listener", stopping.wait())
    server.should_exit = True
    child.stop(timeout=30)
    thread.join(timeout=15)
    dicom.stop()
    up.stop()
    LOG.info("serve: stopped")
    return 0


def listener(args: argparse.Namespace, parts: Parts) -> int:
    require_encrypted_data(parts, "listener")
    stopping = StopRequest()
    dicom = parts.listener()
    dicom.start()
    up = UptimeRecorder(parts.database().conn, "listener")
    up.start()
    sd_notify.notify("READY=1")  # the completion loop feeds the watchdog
    LOG.info("listener: %s received; stopping", stopping.wait())
    dicom.stop()
    up.stop()
    LOG.info("listener: stopped")
    return 0


def hang_check(parts: Parts) -> tuple[Callable[[int], str | None], Callable[[int, str], None]]:
    """For the supervisor: why the worker process ``pid`` is hung (its heartbeat overdue by
    ``worker.hang_restart_s``), or None (read only); and, once it is killed, the audit event
    ``alert-worker-hung``, which the next worker's upkeep sends out. The connection is
    opened on first use, in the supervisor's thread."""
    from appliance.triage.heartbeat import hung

    connection: list = []

    def db():
        if not connection:
            connection.append(parts.database())
        return connection[0]

    def check(pid: int) -> str | None:
        now = time.time()
        late = [b for b in hung(db().conn, now, parts.settings.worker.hang_restart_s) if b.pid == pid]
        return late[0].words(now) if late else None

    def killed(pid: int, reason: str) -> None:
        append(db(), "alert-worker-hung", {"pid": pid, "reason": reason, "action": "killed and restarted"})

    return check, killed


def worker(args: argparse.Namespace, parts: Parts) -> int:
    """The worker and the result sender (results leave from the process that makes them).
    The worker tells systemd it is ready once warmed up, and feeds the watchdog as its loop
    advances."""
    require_encrypted_data(parts, "worker")
    one_blas_thread()  # the worker's threads each run their own small products
    stopping = StopRequest()
    loop, sender = parts.worker_and_sender()
    on_stop_signal(loop.stop)
    if stopping.is_set():  # signalled while the parts were being built
        loop.stop()
    sender.start()
    LOG.info("worker: taking jobs; the result sender is running")
    loop.run()
    LOG.info("worker: stopping the result sender")
    sender.stop(timeout=30)
    LOG.info("worker: stopped")
    return 0


def web(args: argparse.Namespace, parts: Parts) -> int:
    """The web pages, API, health and metrics alone (for systemd). A stop signal sets the
    server's exit flag, whenever it comes: before uvicorn takes the signals (during a slow
    start), while it has them, or when it raises the one it caught again after restoring
    this handler (without it, that second delivery killed the process before it logged
    that it stopped)."""
    from appliance.web.server import announce, build_server

    require_encrypted_data(parts, "web")
    server = build_server(parts)
    on_stop_signal(lambda: setattr(server, "should_exit", True))
    announce(parts)  # before run(): uvicorn's own lines are kept to warnings
    server.run()
    LOG.info("web: stopped")
    return 0

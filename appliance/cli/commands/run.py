"""``serve``, ``listener``, ``worker``, ``web``: the long-running components."""

from __future__ import annotations

import argparse
import logging
import signal

from appliance.cli.commands.common import until_signalled
from appliance.parts import Parts

LOG = logging.getLogger("appliance.run")


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "serve", help="the listener and the web server, and the worker with the sender in a child process"
    ).set_defaults(func=serve)
    sub.add_parser("listener", help="run the DICOM listener").set_defaults(func=listener)
    sub.add_parser("worker", help="run the inference worker and the result sender").set_defaults(func=worker)
    sub.add_parser("web", help="run the web pages, API, /healthz, /readyz and /metrics").set_defaults(func=web)


def serve(args: argparse.Namespace, parts: Parts) -> int:
    """The listener and the web server here; the worker and the sender in a child process
    with a memory limit."""
    from appliance.triage.supervisor import WorkerProcess
    from appliance.web.server import start_in_thread

    dicom = parts.listener()
    child = WorkerProcess(parts.settings.worker.memory_limit_mb)
    dicom.start()
    child.start()
    server, thread = start_in_thread(parts)
    LOG.info("serve: %s received; stopping the web server, the worker and the listener", until_signalled())
    server.should_exit = True
    child.stop(timeout=30)
    thread.join(timeout=15)
    dicom.stop()
    LOG.info("serve: stopped")
    return 0


def listener(args: argparse.Namespace, parts: Parts) -> int:
    dicom = parts.listener()
    dicom.start()
    LOG.info("listener: %s received; stopping", until_signalled())
    dicom.stop()
    LOG.info("listener: stopped")
    return 0


def worker(args: argparse.Namespace, parts: Parts) -> int:
    """The worker and the result sender (results leave from the process that makes them)."""
    loop, sender = parts.worker_and_sender()
    sender.start()
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())
    loop.run()
    LOG.info("worker: stopping the result sender")
    sender.stop(timeout=30)
    LOG.info("worker: stopped")
    return 0


def web(args: argparse.Namespace, parts: Parts) -> int:
    """The web pages, API, health and metrics alone (for systemd)."""
    from appliance.web.server import build_server

    build_server(parts).run()
    LOG.info("web: stopped")
    return 0

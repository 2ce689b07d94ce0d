"""Run the web app with uvicorn: HTTP, or HTTPS when ``[web.tls]`` names a certificate."""

from __future__ import annotations

import logging
import threading

import uvicorn

from appliance.parts import Parts
from appliance.web.app import create_app

LOG = logging.getLogger(__name__)


def build_server(parts: Parts) -> uvicorn.Server:
    settings = parts.settings
    tls = settings.web.tls
    config = uvicorn.Config(
        create_app(parts),
        host=settings.web.bind_address,
        port=settings.web.port,
        log_level="warning",
        access_log=False,  # request lines carry study UIDs; refusals are in the audit log instead
        ssl_certfile=str(tls.certificate) if tls.enabled else None,
        ssl_keyfile=str(tls.private_key) if tls.enabled else None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def start_in_thread(parts: Parts) -> tuple[uvicorn.Server, threading.Thread]:
    """The web server on a daemon thread (for ``appliance serve``); stop with ``should_exit``."""
    server = build_server(parts)
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    announce(parts)
    return server, thread


def announce(parts: Parts) -> None:
    """Log where the pages are served (``appliance serve`` and ``appliance web`` alike)."""
    web = parts.settings.web
    LOG.info("web pages on %s://%s:%d", "https" if web.tls.enabled else "http", web.bind_address, web.port)

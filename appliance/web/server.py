"""Run the web app with uvicorn: HTTP, or HTTPS when ``[web.tls]`` names a certificate."""

from __future__ import annotations

import logging
import threading

import uvicorn

from appliance.config import check_private_key
from appliance.parts import Parts
from appliance.web.app import create_app
from appliance.web.guard import (
    ConnectionGuard,
    Limits,
    accept_burst,
    open_file_limit,
    protocol_class,
    quiet_accept_errors,
    total_cap,
)

LOG = logging.getLogger(__name__)


def connection_guard(parts: Parts) -> ConnectionGuard:
    """The caps and deadlines of ``[web]``, the total held under the open-file limit."""
    web = parts.settings.web
    return ConnectionGuard(
        Limits(
            max_connections=total_cap(web.max_connections, open_file_limit()),
            max_connections_per_address=web.max_connections_per_address,
            header_timeout_s=web.header_timeout_s,
            body_timeout_s=web.body_timeout_s,
            body_min_rate=web.body_min_rate,
        )
    )


def build_server(parts: Parts, guard: ConnectionGuard | None = None) -> uvicorn.Server:
    settings = parts.settings
    tls = settings.web.tls
    guard = guard or connection_guard(parts)
    quiet_accept_errors()
    if tls.private_key is not None:
        check_private_key(tls.private_key, "web.tls.private_key")
    config = uvicorn.Config(
        create_app(parts),
        http=protocol_class(guard),
        backlog=accept_burst(guard.limits.max_connections),
        host=settings.web.bind_address,
        port=settings.web.port,
        log_level="warning",
        access_log=False,  # request lines carry study UIDs; refusals are in the audit log instead
        ssl_certfile=str(tls.certificate) if tls.enabled else None,
        ssl_keyfile=str(tls.private_key) if tls.enabled else None,
        # Behind a reverse proxy on this host every client is the proxy: its X-Forwarded-For
        # names the client (for the sign-in throttle and the audit), from those addresses only.
        proxy_headers=bool(settings.web.trusted_proxies),
        forwarded_allow_ips=list(settings.web.trusted_proxies) or None,
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

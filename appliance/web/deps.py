"""The web's typed dependencies: what a route asks for, provided from the composition root.

A route declares what it uses (``conn: Connection``, ``settings: SettingsDep``,
``models: Registry``; ``principal: SignedIn`` from :mod:`appliance.web.security`) and
FastAPI hands it over. The app keeps its :class:`appliance.parts.Parts`, a pool of
database connections and its clock; this module (with the app factory that puts them
there) is the one place that reads ``app.state``.

A request borrows one connection for its whole life: its route and every dependency share
it, whichever threads they run on, and it goes back to the pool when the response is
sent (SQLite connections must not serve two requests at once).
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry

from appliance.config import Settings
from appliance.models.registry import ModelRegistry


class ConnectionPool:
    """Connections lent to one user at a time; a new one is opened when none is free."""

    def __init__(self, open_database: Callable[[], sqlite_utils.Database]):
        self._open = open_database
        self._free: queue.SimpleQueue[sqlite_utils.Database] = queue.SimpleQueue()

    @contextmanager
    def borrow(self) -> Iterator[sqlite_utils.Database]:
        try:
            db = self._free.get_nowait()
        except queue.Empty:
            db = self._open()
        try:
            yield db
        finally:
            self._free.put(db)


def settings(request: Request) -> Settings:
    return request.app.state.parts.settings


def database(request: Request) -> Iterator[sqlite_utils.Database]:
    """This request's connection, borrowed from the app's pool until the response is sent."""
    with request.app.state.pool.borrow() as db:
        yield db


def connection(db: Annotated[sqlite_utils.Database, Depends(database)]) -> sqlite3.Connection:
    return db.conn


def registry(request: Request, db: Annotated[sqlite_utils.Database, Depends(database)]) -> ModelRegistry:
    """The installed models, on this request's connection."""
    return request.app.state.parts.registry(db)


def now(request: Request) -> float:
    """The app's clock (tests give the app their own) when the request asked."""
    return request.app.state.clock()


def templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def metrics(request: Request) -> CollectorRegistry:
    """The app's Prometheus collectors (they keep their histograms between scrapes)."""
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(settings)]
Database = Annotated[sqlite_utils.Database, Depends(database)]
Connection = Annotated[sqlite3.Connection, Depends(connection)]
Registry = Annotated[ModelRegistry, Depends(registry)]
Now = Annotated[float, Depends(now)]
Metrics = Annotated[CollectorRegistry, Depends(metrics)]

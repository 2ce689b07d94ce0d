"""Fixtures: a real hub process on loopback, on SQLite or on a PostgreSQL cluster this
suite starts and stops."""

from __future__ import annotations

import pytest

from tests.helpers.hub import HubProcess, PostgresCluster


@pytest.fixture(scope="session")
def postgres_cluster():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request, tmp_path):
    """A running hub on loopback: SQLite in its data dir, or a fresh PostgreSQL database."""
    url = request.getfixturevalue("postgres_cluster").new_database() if request.param == "postgresql" else None
    process = HubProcess(tmp_path / "hub", url).start()
    yield process
    process.stop()

"""A throwaway cluster for the suite: pgbulk's local cluster under a
temporary PGBULK_HOME, started once and removed at the end (as root its
data lives outside PGBULK_HOME, where the server's account reaches it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import pgbulk


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("pgbulk-home")
    os.chmod(home, 0o755)
    os.environ["PGBULK_HOME"] = str(home)
    for name in list(os.environ):
        if name.startswith("PG") and name != "PGBULK_HOME":
            del os.environ[name]
    url = pgbulk.local.start()
    yield url
    assert pgbulk.local.remove()
    assert not pgbulk.local.remove(), "removed already"


def database_url(server: str, name: str) -> str:
    """The server's URL with another database name."""
    base, _, query = server.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def db(server: str) -> Iterator[str]:
    """A new, empty database; its URL."""
    name = "py_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url(server, name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()

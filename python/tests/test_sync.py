"""pgbulk.sync: the library's sync, from Python."""

from __future__ import annotations

import psycopg
from conftest import rows

import pgbulk


def test_a_table_is_synced_then_only_new_rows_are_read(server: str, db: str) -> None:
    from conftest import database_url

    source = database_url(server, "postgres")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS py_events")
        conn.execute(
            "CREATE TABLE py_events"
            " (id int PRIMARY KEY, v text, at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO py_events (id, v) SELECT i, 'v' || i FROM generate_series(1, 500) i"
        )
    first = pgbulk.sync(source, table="py_events", db=db, incremental="at")
    assert isinstance(first, pgbulk.SyncReport)
    assert (first.rows_read, first.inserted) == (500, 500)
    assert first.watermark_next is not None
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("INSERT INTO py_events (id, v) VALUES (501, 'new')")
    second = pgbulk.sync(source, table="py_events", db=db, incremental="at")
    assert second.inserted == 1
    assert rows(db, "SELECT count(*), max(id) FROM py_events") == [(501, 501)]
    plan = pgbulk.sync(
        source, query="SELECT id, v FROM py_events", to="copy", key=["id"], db=db, dry_run=True
    )
    assert 'id <- "id"' in plan.mapping
    assert rows(db, "SELECT count(*) FROM pg_class WHERE relname = 'copy'") == [(0,)]


def test_a_mismatch_is_a_data_error_and_writes_nothing(server: str, db: str) -> None:
    from conftest import database_url

    source = database_url(server, "postgres")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS py_wide")
        conn.execute("CREATE TABLE py_wide (id bigint PRIMARY KEY, code text)")
        conn.execute("INSERT INTO py_wide VALUES (1, 'x')")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE py_wide (id int PRIMARY KEY, code int)")
    try:
        pgbulk.sync(source, table="py_wide", db=db)
    except pgbulk.DataError as e:
        assert "nothing was written" in str(e)
        assert 'column "id": source bigint, destination integer' in str(e)
    else:
        raise AssertionError("the mismatch was not refused")
    assert rows(db, "SELECT count(*) FROM py_wide") == [(0,)]


def test_jobs_and_a_window_replaced_with_delete_missing(server: str, db: str) -> None:
    from conftest import database_url

    source = database_url(server, "postgres")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS py_days")
        conn.execute("CREATE TABLE py_days (id int PRIMARY KEY, day date NOT NULL, v text)")
        conn.execute(
            "INSERT INTO py_days SELECT i, date '2024-05-01' + i % 2, 'v' || i"
            " FROM generate_series(1, 100000) i"
        )
        conn.execute("ANALYZE py_days")
    full = pgbulk.sync(source, table="py_days", db=db, jobs=2)
    assert full.ranges == 2 and full.inserted == 100_000
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("DELETE FROM py_days WHERE id IN (2, 3)")
    day = pgbulk.sync(
        source, table="py_days", db=db, where="day = '2024-05-01'", delete_missing=True
    )
    assert day.deleted == 1
    assert rows(db, "SELECT count(*) FROM py_days WHERE id IN (2, 3)") == [(1,)]

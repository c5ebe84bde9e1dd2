"""pgbulk.airflow: the example daily DAG run with Airflow's dag.test() for
three days against two databases of the throwaway cluster, then a re-run
of the middle day after a source update and delete; the destination exact
after each run."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from conftest import rows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "airflow"
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Airflow home (SQLite metadata database, the examples as the
    DAGs folder), set before Airflow is first imported."""
    home = tmp_path_factory.mktemp("airflow-home")
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    yield home


def example_dag(name: str = "daily_sync") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_daily_dag_syncs_each_day_and_a_rerun_replaces_it(
    airflow_home: Path, server: str, db: str
) -> None:
    source = db
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "af_warehouse"')
        conn.execute('CREATE DATABASE "af_warehouse"')
    base, _, query = server.partition("?")
    warehouse = base.rsplit("/", 1)[0] + "/af_warehouse" + (f"?{query}" if query else "")
    with psycopg.connect(source) as conn:
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, created_at timestamptz NOT NULL, "
            "amount numeric(10,2))"
        )
        conn.execute(
            "INSERT INTO orders SELECT g, timestamptz '2024-05-01 00:00+00' "
            "+ (g % 3) * interval '1 day' + g * interval '1 minute', g * 1.25 "
            "FROM generate_series(1, 30) g"
        )
    os.environ["AIRFLOW_CONN_APP_DB"] = source
    os.environ["AIRFLOW_CONN_WAREHOUSE"] = warehouse
    dag = example_dag().dag
    everything = "SELECT id, created_at, amount FROM orders ORDER BY id"
    until = "SELECT id, created_at, amount FROM orders WHERE created_at < %s ORDER BY id"

    def run(day: dt.date) -> None:
        result = dag.test(logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=UTC))
        assert result is not None and str(result.state) == "success", result

    def upto(day: dt.date) -> list[tuple[object, ...]]:
        end = dt.datetime(day.year, day.month, day.day, tzinfo=UTC) + dt.timedelta(days=1)
        with psycopg.connect(source) as conn:
            return conn.execute(until, (end,)).fetchall()

    for day in (dt.date(2024, 5, 1), dt.date(2024, 5, 2), dt.date(2024, 5, 3)):
        run(day)
        assert rows(warehouse, everything) == upto(day), day
    assert len(rows(warehouse, everything)) == 30

    # The source changes within the middle day: a re-run of that day
    # replaces it (the update arrives, the deleted row goes), the other
    # days untouched.
    with psycopg.connect(source) as conn:
        conn.execute("UPDATE orders SET amount = 999 WHERE id = 1")
        conn.execute("DELETE FROM orders WHERE id = 4")
    run(dt.date(2024, 5, 2))
    assert rows(warehouse, everything) == rows(source, everything)
    assert len(rows(warehouse, everything)) == 29


def test_airflow_connections_become_libpq_uris(airflow_home: Path) -> None:
    from pgbulk.airflow import conn_uri

    os.environ["AIRFLOW_CONN_SHOP"] = json.dumps(
        {
            "conn_type": "postgres",
            "host": "db.example.com",
            "port": 5433,
            "login": "loader",
            "password": "p@ss word",
            "schema": "sales",
            "extra": {"sslmode": "verify-full", "cursor": "dictcursor", "application_name": "etl"},
        }
    )
    uri = conn_uri("shop")
    assert uri.startswith("postgresql://loader:p%40ss")
    assert "@db.example.com:5433/sales?" in uri
    assert "sslmode=verify-full" in uri and "application_name=etl" in uri
    assert "cursor" not in uri


def test_a_sync_tasks_notes_go_to_the_task_log(
    airflow_home: Path, server: str, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE noted (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO noted VALUES (1, 'a'), (2, 'b')")
    os.environ["AIRFLOW_CONN_NOTED_DB"] = db
    from pgbulk.airflow import sync_task

    with caplog.at_level("INFO", logger="pgbulk.airflow"):
        report = sync_task("noted_db", "noted_db", table="noted", to="noted_copy")
    assert report["inserted"] == 2
    assert report["notes"], report
    logged = [r.getMessage() for r in caplog.records if r.name == "pgbulk.airflow"]
    assert logged == [f"pgbulk: {note}" for note in report["notes"]], logged
    assert rows(db, "SELECT * FROM noted_copy ORDER BY id") == [(1, "a"), (2, "b")]


def test_the_daily_files_dag_loads_each_days_file_with_its_options(
    airflow_home: Path, db: str, tmp_path: Path
) -> None:
    for day, zips in (("2024-05-01", ["10001", "10002"]), ("2024-05-02", ["02134"])):
        lines = ["# export", "zip|city"] + [f"{z}|c{z}" for z in zips]
        (tmp_path / f"zips_{day}.csv").write_text("\n".join(lines) + "\n")
    os.environ["AIRFLOW_CONN_WAREHOUSE"] = db
    os.environ["LANDING_DIR"] = str(tmp_path)
    dag = example_dag("daily_files").dag
    for day in (1, 2, 2):
        result = dag.test(logical_date=dt.datetime(2024, 5, day, tzinfo=UTC))
        assert result is not None and str(result.state) == "success", result
    # Without types the first day's file would make zip an integer column
    # and the second day's leading zero would be dropped or refused; the
    # re-run of the second day skips its file.
    assert rows(db, "SELECT zip, city FROM zips ORDER BY zip") == [
        ("02134", "c02134"),
        ("10001", "c10001"),
        ("10002", "c10002"),
    ]

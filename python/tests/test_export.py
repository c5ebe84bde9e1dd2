"""pgbulk.export: the library's export, from Python, read back with pyarrow."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

import pgbulk


def test_tables_are_exported_to_parquet_and_a_failure_carries_the_report(
    db: str, tmp_path: Path
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE py_exp (id int PRIMARY KEY, v text, amount numeric(10,2),"
            " at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO py_exp (id, v, amount) SELECT i, 'v' || i, i / 4.0"
            " FROM generate_series(1, 300) i"
        )
        conn.execute("CREATE TABLE py_bad (id int, amount numeric(10,2))")
        conn.execute("INSERT INTO py_bad VALUES (1, 'NaN')")
    to = f"parquet://{tmp_path / 'lake'}"
    plan = pgbulk.export("py_exp", to, source=db, dry_run=True)
    assert '"amount" numeric(10,2) -> Parquet DECIMAL(10, 2), BigQuery NUMERIC(10, 2)' in (
        plan.tables[0].mapping
    )
    assert not (tmp_path / "lake").exists()
    first = pgbulk.export(["py_exp"], to, source=db, incremental="at")
    assert isinstance(first, pgbulk.ExportReport)
    (done,) = first.tables
    assert (done.rows, done.file) == (300, "py_exp/run-000001.parquet")
    assert done.watermark_next is not None
    read = pq.read_table(tmp_path / "lake" / "py_exp" / "run-000001.parquet")
    assert read.num_rows == 300
    assert str(read.schema.field("amount").type) == "decimal128(10, 2)"
    assert sorted(read.column("id").to_pylist())[:3] == [1, 2, 3]
    with pytest.raises(pgbulk.DataError) as failed:
        pgbulk.export(["py_bad", "py_exp"], to, source=db)
    assert "NaN, which a decimal cannot hold" in str(failed.value)
    report = failed.value.report  # type: ignore[attr-defined]
    assert [t.source for t in report.tables] == ["public.py_exp"]
    # Without incremental, py_exp's files are replaced by one of every row.
    assert (report.tables[0].rows, report.tables[0].file) == (300, "py_exp/run-000002.parquet")
    assert list(report.failed) == ["public.py_bad"]

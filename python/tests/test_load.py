"""pgbulk.load_csv: the library's load, from Python."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import rows

import pgbulk


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_new_table_is_created_then_upserted_by_key(db: str, tmp_path: Path) -> None:
    first = write(tmp_path / "sales.csv", "id,item,qty\n1,apple,3\n2,pear,5\n")
    report = pgbulk.load_csv(first, "sales", db=db)
    assert isinstance(report, pgbulk.LoadReport)
    assert (report.rows_read, report.inserted) == (2, 2)
    assert report.created_ddl is not None and "CREATE TABLE" in report.created_ddl
    second = write(tmp_path / "more.csv", "id,item,qty\n1,apple,3\n2,pear,6\n3,fig,1\n")
    again = pgbulk.load_csv([second], "sales", db=db, key=["id"], mode="upsert")
    assert (again.inserted, again.updated, again.unchanged) == (1, 1, 1)
    assert rows(db, "SELECT id, item, qty FROM sales ORDER BY id") == [
        (1, "apple", 3),
        (2, "pear", 6),
        (3, "fig", 1),
    ]


def test_a_landing_folder_loads_each_file_once_and_a_dry_run_says_so(
    db: str, tmp_path: Path
) -> None:
    (tmp_path / "landing").mkdir()
    write(tmp_path / "landing" / "a.csv", "id,n\n1,1\n")
    write(tmp_path / "landing" / "b.csv", "id,n\n2,2\n")
    pattern = str(tmp_path / "landing" / "*.csv")
    dry = pgbulk.load_csv(pattern, "events", db=db, dry_run=True)
    assert any("would be created" in line for line in dry.plan), dry.plan
    assert rows(db, "SELECT count(*) FROM pg_class WHERE relname = 'events'") == [(0,)]
    first = pgbulk.load_csv(pattern, "events", db=db)
    assert first.inserted == 2
    write(tmp_path / "landing" / "c.csv", "id,n\n3,3\n")
    second = pgbulk.load_csv(pattern, "events", db=db)
    assert (second.inserted, len(second.skipped)) == (1, 2)
    none = pgbulk.load_csv(str(tmp_path / "empty" / "*.csv"), "events", db=db)
    assert none.nothing_to_load is not None and "no file matches" in none.nothing_to_load
    assert rows(db, "SELECT count(*) FROM events") == [(3,)]
    ledger = pgbulk.status("events", db=db)
    assert ledger.table == "public.events"
    assert sum(line.startswith("loaded:") for line in ledger.lines) == 3, ledger.lines
    last = next(r for r in ledger.rows if r.part == "last-run")
    assert last.metadata["inserted"] == 1 and last.metadata["skipped_inputs"] == 2


def test_a_declared_schema_and_a_delimiter(db: str, tmp_path: Path) -> None:
    data = write(tmp_path / "t.tsv", "id\tname\n1\t\\N\n")
    report = pgbulk.load_csv(
        str(data),
        "public.t",
        db=db,
        schema="CREATE TABLE public.t (id bigint PRIMARY KEY, name text);",
        delimiter="\t",
        null="\\N",
    )
    assert report.inserted == 1
    assert rows(db, "SELECT id, name FROM t") == [(1, None)]


def test_the_flags_a_message_names_are_arguments_of_the_same_names(db: str, tmp_path: Path) -> None:
    # A ZIP code past the sample is refused naming --type; types= keeps it.
    lines = ["# exported 2024-05-01", "zip;city"] + [f"{10000 + i};'x;y'" for i in range(30)]
    data = write(tmp_path / "zips.csv", "\n".join(lines + ["02134;'Boston'"]) + "\n")
    with pytest.raises(pgbulk.DataError, match="--type zip=text"):
        pgbulk.load_csv(str(data), "zips", db=db, skip_lines=1, quote="'", sample_rows=5)
    report = pgbulk.load_csv(
        str(data), "zips", db=db, skip_lines=1, quote="'", sample_rows=5, types={"zip": "text"}
    )
    assert report.inserted == 31
    assert rows(db, "SELECT zip, city FROM zips WHERE zip LIKE '0%'") == [("02134", "Boston")]
    assert rows(db, "SELECT DISTINCT city FROM zips WHERE zip LIKE '1%'") == [("x;y",)]
    # columns= names the fields of a headerless file; escape= reads \".
    bare = write(tmp_path / "bare.csv", '1,"say \\"hi\\""\n')
    pgbulk.load_csv(str(bare), "bare", db=db, header=False, columns=["n", "said"], escape="\\")
    assert rows(db, "SELECT n, said FROM bare") == [(1, 'say "hi"')]
    with pytest.raises(pgbulk.ConfigError, match="quote: must be a single"):
        pgbulk.load_csv(str(bare), "bare", db=db, quote="''")


def test_postgresqls_text_format_is_read_as_copy_reads_it(db: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE src (id int, t text, a text[]);"
            " INSERT INTO src VALUES (1, E'tab\\there\\nnew', ARRAY[E'a\\\\b', NULL]),"
            " (2, NULL, NULL), (3, E'\\\\N', '{}');"
            " CREATE TABLE found (LIKE src); CREATE TABLE asked (LIKE src)"
        )
        dump = tmp_path / "src.tsv"
        with conn.cursor().copy("COPY src TO STDOUT") as copy:
            dump.write_bytes(b"".join(bytes(chunk) for chunk in copy))
    assert b"\\N" in dump.read_bytes()
    # Its first line is data: COPY TO writes no header unless asked.
    found = pgbulk.load_csv(dump, "found", db=db)
    assert any("PostgreSQL's text format" in n for n in found.notes), found.notes
    assert any("first line is read as data" in n for n in found.notes), found.notes
    pgbulk.load_csv(dump, "asked", db=db, format="text")
    for table in ("found", "asked"):
        differ = f"SELECT count(*) FROM ((TABLE src EXCEPT ALL TABLE {table})"
        differ += f" UNION ALL (TABLE {table} EXCEPT ALL TABLE src)) d"
        assert rows(db, differ) == [(0,)], table
    with pytest.raises(pgbulk.ConfigError, match="format"):
        pgbulk.load_csv(dump, "asked", db=db, format="json")  # type: ignore[arg-type]
    # What was detected comes with an error.
    with pytest.raises(pgbulk.DataError) as caught:
        pgbulk.load_csv(dump, "asked", db=db, header=True)
    assert any("PostgreSQL's text format" in n for n in caught.value.notes or []), caught.value


def test_a_bad_value_is_a_data_error_naming_file_line_and_column(db: str, tmp_path: Path) -> None:
    data = write(tmp_path / "bad.csv", "id,n\n1,2\n2,x\n")
    with pytest.raises(pgbulk.DataError) as caught:
        pgbulk.load_csv(data, "nums", db=db, schema="CREATE TABLE nums (id int, n int);")
    e = caught.value
    assert isinstance(e, pgbulk.Error)
    assert e.input is not None and e.input.endswith("bad.csv")
    assert (e.line, e.column, e.value) == (3, "n", "x")
    assert rows(db, "SELECT count(*) FROM pg_class WHERE relname = 'nums'") == [(0,)]


def test_a_refused_row_carries_the_servers_sqlstate_and_detail(db: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE pos (id int PRIMARY KEY, n int CHECK (n > 0))")
    data = write(tmp_path / "pos.csv", "id,n\n1,5\n2,-1\n")
    with pytest.raises(pgbulk.Error) as caught:
        pgbulk.load_csv(data, "pos", db=db)
    e = caught.value
    assert e.sqlstate == "23514"
    assert e.detail is not None and "Failing row contains" in e.detail
    assert e.table == "pos" or e.table == "public.pos"
    # The batch is read again to name the row's line.
    assert e.input is not None and e.input.endswith("pos.csv")
    assert e.line == 3


def test_wrong_options_and_unreachable_servers_raise_their_kind(db: str, tmp_path: Path) -> None:
    data = write(tmp_path / "x.csv", "a\n1\n")
    with pytest.raises(pgbulk.ConfigError):
        pgbulk.load_csv(data, "x", db=db, mode="merge")  # type: ignore[arg-type]
    with pytest.raises(pgbulk.ConnectError):
        pgbulk.load_csv(data, "x", db="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(pgbulk.IOError):
        pgbulk.load_csv(tmp_path / "missing.csv", "x", db=db)


def test_db_takes_the_connections_python_code_holds(db: str, tmp_path: Path) -> None:
    import psycopg
    import psycopg2
    import sqlalchemy

    data = write(tmp_path / "c.csv", "id,v\n1,a\n")
    with psycopg.connect(db) as conn:
        assert pgbulk.load_csv(data, "via_psycopg", db=conn).inserted == 1
    legacy = psycopg2.connect(db)
    try:
        assert pgbulk.load_csv(data, "via_psycopg2", db=legacy).inserted == 1
    finally:
        legacy.close()
    engine = sqlalchemy.create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        assert pgbulk.load_csv(data, "via_engine", db=engine).inserted == 1
        with engine.connect() as conn:
            assert pgbulk.load_csv(data, "via_sqlalchemy", db=conn).inserted == 1
    finally:
        engine.dispose()
    for table in ["via_psycopg", "via_psycopg2", "via_engine", "via_sqlalchemy"]:
        assert rows(db, f"SELECT id, v FROM {table}") == [(1, "a")]
    with pytest.raises(TypeError):
        pgbulk.load_csv(data, "x", db=42)


def test_plan_says_what_a_migration_takes_and_changes_nothing(db: str) -> None:
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    plan = pgbulk.plan("CREATE TABLE p (id int PRIMARY KEY, name text NOT NULL DEFAULT '');", db=db)
    assert isinstance(plan, pgbulk.Plan)
    assert len(plan.steps) == 1
    step = plan.steps[0]
    assert step.table.endswith("p") and "name" in step.summary
    assert any("ADD COLUMN" in sql for sql in step.sql)
    assert "name" in str(plan)
    assert rows(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'p'") == [
        (1,)
    ]


def test_parquet_files_load_with_their_own_types(db: str, tmp_path: Path) -> None:
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "name": pa.array(['é, "q"', None]),
            "amount": pa.array([decimal.Decimal("12.50"), None], pa.decimal128(10, 2)),
            "at": pa.array(
                [datetime.datetime(2024, 5, 1, 10, 0, 0, 123456), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "tags": pa.array([["a", None], []], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    report = pgbulk.load_csv(path, "events", db=db, key=["id"])
    assert (report.rows_read, report.inserted) == (2, 2)
    assert report.created_ddl is not None and '"amount" numeric(10,2)' in report.created_ddl
    assert rows(
        db,
        "SELECT id, name, amount::text, (at AT TIME ZONE 'UTC')::text, tags::text "
        "FROM events ORDER BY id",
    ) == [
        (1, 'é, "q"', "12.50", "2024-05-01 10:00:00.123456", "{a,NULL}"),
        (2, None, None, None, "{}"),
    ]
    again = pgbulk.load_csv(path, "events", db=db, key=["id"])
    assert again.already_loaded


def test_a_pandas_parquet_files_unnamed_index_is_left_out_and_a_named_one_kept(
    db: str, tmp_path: Path
) -> None:
    import pandas as pd

    frame = pd.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    # A filtered frame's row labels are written as __index_level_0__.
    frame[frame["id"] > 1].to_parquet(tmp_path / "filtered.parquet")
    frame.set_index("id").to_parquet(tmp_path / "named.parquet")
    created = pgbulk.load_csv(tmp_path / "filtered.parquet", "filtered", db=db).created_ddl
    assert created is not None and "__index_level_0__" not in created
    assert rows(db, "SELECT * FROM filtered ORDER BY id") == [(2, "b"), (3, "c")]
    pgbulk.load_csv(tmp_path / "named.parquet", "named", db=db)
    assert rows(db, "SELECT id, v FROM named ORDER BY id") == [(1, "a"), (2, "b"), (3, "c")]


def test_int96_timestamps_keep_dates_outside_the_nanosecond_range(db: str, tmp_path: Path) -> None:
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = [
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(1, 1, 1),
        datetime.datetime(2024, 5, 1, 10, 0, 0, 123456),
        None,
    ]
    table = pa.table({"id": [1, 2, 3, 4], "at": pa.array(stamps, pa.timestamp("us"))})
    path = tmp_path / "spark.parquet"
    # As Spark writes them: INT96, no Arrow schema in the file.
    pq.write_table(table, path, use_deprecated_int96_timestamps=True, store_schema=False)
    pgbulk.load_csv(path, "stamps", db=db)
    assert rows(db, "SELECT id, at::text FROM stamps ORDER BY id") == [
        (1, "9999-12-31 23:59:59.999999"),
        (2, "0001-01-01 00:00:00"),
        (3, "2024-05-01 10:00:00.123456"),
        (4, None),
    ]

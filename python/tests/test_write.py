"""pgbulk.write: Arrow data (pyarrow, pandas, polars) into tables, every
value as PostgreSQL stores it."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import uuid

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pytest
from conftest import rows

import pgbulk

UTC = dt.timezone.utc


def test_a_type_matrix_round_trips_into_a_created_table(db: str) -> None:
    u = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "i8": pa.array([-128, None, 127], pa.int8()),
            "u64": pa.array([2**64 - 1, 0, None], pa.uint64()),
            "f32": pa.array([0.1, float("nan"), None], pa.float32()),
            "f64": pa.array([0.1, float("-inf"), 1e-300], pa.float64()),
            "dec": pa.array(
                [decimal.Decimal("123.45"), decimal.Decimal("-0.05"), None], pa.decimal128(10, 2)
            ),
            "big": pa.array(
                [decimal.Decimal("1" * 40), None, decimal.Decimal("0")], pa.decimal256(45, 0)
            ),
            "s": pa.array(['a "quoted", text\nline', "", None], pa.string()),
            "ls": pa.array(["x", None, "é😀"], pa.large_string()),
            "b": pa.array([b"\x00\xff", b"", None], pa.binary()),
            "ok": pa.array([True, False, None], pa.bool_()),
            "d": pa.array([dt.date(2024, 2, 29), dt.date(1, 1, 1), None], pa.date32()),
            "t": pa.array([dt.time(23, 59, 59, 999999), dt.time(0, 0), None], pa.time64("us")),
            "ts": pa.array(
                [dt.datetime(2024, 2, 29, 23, 59, 59, 999999), None, dt.datetime(1970, 1, 1)],
                pa.timestamp("us"),
            ),
            "tstz": pa.array(
                [
                    dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
                    None,
                    dt.datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
                ],
                pa.timestamp("ns", tz="Europe/Oslo"),
            ),
            "dur": pa.array(
                [dt.timedelta(days=1, microseconds=5), None, dt.timedelta(seconds=-1)],
                pa.duration("us"),
            ),
            "u": pa.array([u.bytes, None, uuid.UUID(int=0).bytes], pa.uuid()),
            "li": pa.array([[1, None, 3], [], None], pa.list_(pa.int32())),
            "ltxt": pa.array([["a,b", '"q"', None], None, []], pa.list_(pa.string())),
            "st": pa.array(
                [{"k": 1, "v": "x"}, None, {"k": None, "v": 'y"z'}],
                pa.struct([("k", pa.int64()), ("v", pa.string())]),
            ),
            "m": pa.array([[("a", 1)], None, []], pa.map_(pa.string(), pa.int64())),
            "dict": pa.array(["red", "blue", None]).dictionary_encode(),
        }
    )
    report = pgbulk.write(table, "matrix", db=db, key=["id"])
    assert (report.inserted, report.rows_read) == (3, 3)
    assert report.created_ddl is not None and '"u" uuid' in report.created_ddl
    types = dict(
        rows(
            db,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'matrix'::regclass AND attnum > 0",
        )
    )
    assert types == {
        "id": "bigint",
        "i8": "smallint",
        "u64": "numeric(20,0)",
        "f32": "real",
        "f64": "double precision",
        "dec": "numeric(10,2)",
        "big": "numeric(45,0)",
        "s": "text",
        "ls": "text",
        "b": "bytea",
        "ok": "boolean",
        "d": "date",
        "t": "time without time zone",
        "ts": "timestamp without time zone",
        "tstz": "timestamp with time zone",
        "dur": "interval",
        "u": "uuid",
        "li": "integer[]",
        "ltxt": "text[]",
        "st": "jsonb",
        "m": "jsonb",
        "dict": "text",
    }
    with psycopg.connect(db) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        got = conn.execute("SELECT * FROM matrix ORDER BY id").fetchall()
    one, two, three = got
    assert one[1:5] == (-128, decimal.Decimal(2**64 - 1), pytest.approx(0.1), 0.1)
    assert one[5:11] == (
        decimal.Decimal("123.45"),
        decimal.Decimal("1" * 40),
        'a "quoted", text\nline',
        "x",
        b"\x00\xff",
        True,
    )
    assert one[11:17] == (
        dt.date(2024, 2, 29),
        dt.time(23, 59, 59, 999999),
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
        dt.timedelta(days=1, microseconds=5),
        u,
    )
    assert one[17:] == ([1, None, 3], ["a,b", '"q"', None], {"k": 1, "v": "x"}, {"a": 1}, "red")
    assert two[1] is None and two[2] == 0 and math.isnan(two[3]) and two[4] == float("-inf")
    assert (two[7], two[8], two[9], two[10], two[11]) == ("", None, b"", False, dt.date(1, 1, 1))
    assert (two[17], two[18], two[19], two[20], two[21]) == ([], None, None, None, "blue")
    assert three[4] == 1e-300 and three[8] == "é😀" and three[15] == dt.timedelta(seconds=-1)
    assert (
        three[16] == uuid.UUID(int=0) and three[19] == {"k": None, "v": 'y"z'} and three[20] == {}
    )
    # The float32 is exactly the float4 PostgreSQL stores for it.
    assert rows(db, "SELECT f32 = '0.1'::real FROM matrix WHERE id = 1") == [(True,)]

    # Again: an upsert that changes nothing.
    again = pgbulk.write(table, "matrix", db=db)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)


def test_values_at_the_edges_are_stored_as_the_server_reads_their_text(db: str) -> None:
    # Days and microseconds from 1970: the first and last date and
    # timestamp PostgreSQL holds, and the last an int64 of microseconds can.
    first_day, last_day = -2_440_588, 2_145_042_905
    first_us, last_us = -210_866_803_200_000_000, 2**63 - 1
    nan_payload = struct.unpack(">d", bytes.fromhex("fff8000000000123"))[0]
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "d": pa.array([first_day, last_day, 0], pa.date32()),
            "ts": pa.array([first_us, last_us, -1], pa.timestamp("us")),
            "tz": pa.array([first_us, last_us, 1], pa.timestamp("us", tz="+05:30")),
            "f": pa.array([nan_payload, -0.0, 5e-324], pa.float64()),
            "n": pa.array(
                [decimal.Decimal("-0.05"), decimal.Decimal("12345678.9012"), 0],
                pa.decimal128(12, 4),
            ),
            "t": pa.array([0, 86_400_000_000, 1], pa.time64("us")),
        }
    )
    pgbulk.write(table, "edges", db=db, key=["id"])
    expected = """VALUES
        (1, '4714-11-24 BC'::date, '4714-11-24 00:00:00 BC'::timestamp,
         '4714-11-24 00:00:00+00 BC'::timestamptz, 'NaN'::float8, '-0.0500'::numeric,
         '00:00'::time),
        (2, '5874897-12-31', '294247-01-10 04:00:54.775807', '294247-01-10 04:00:54.775807+00',
         '-0', '12345678.9012', '24:00'),
        (3, '1970-01-01', '1969-12-31 23:59:59.999999', '1970-01-01 00:00:00.000001+00',
         '5e-324', '0.0000', '00:00:00.000001')"""
    # Byte for byte: each column's binary send of both sides.
    columns = "id, d, ts, tz, f, n, t"
    sent = (
        "int8send(id), date_send(d), timestamp_send(ts), timestamptz_send(tz), "
        "float8send(f), numeric_send(n), time_send(t)"
    )
    got = rows(db, f"SELECT {sent} FROM (SELECT {columns} FROM edges) e ORDER BY 1")
    want = rows(
        db,
        f"SELECT {sent} FROM (SELECT * FROM ({expected}) v({columns})) e ORDER BY 1",
    )
    assert got == want
    # One day or microsecond further is the server's to refuse, naming it.
    for column, value in [
        ("d", pa.array([last_day + 1], pa.date32())),
        ("ts", pa.array([first_us - 1], pa.timestamp("us"))),
    ]:
        with pytest.raises(pgbulk.DataError, match=f'column "{column}".* out of range'):
            pgbulk.write(pa.table({"id": [9], column: value}), "edges", db=db)
    assert rows(db, "SELECT count(*) FROM edges") == [(3,)]


def test_nanosecond_timestamps_round_as_the_server_rounds_their_text(db: str) -> None:
    import random

    rng = random.Random(7)
    fractions = [0, 1, 499, 500, 501, 1_500, 2_500, 999_999_499, 999_999_500, 999_999_999]
    fractions += [rng.randrange(10**9) for _ in range(300)]
    fractions += [rng.randrange(10**6) * 1_000 + 500 for _ in range(300)]
    # Nanoseconds of an int64: years 1678 to 2262.
    seconds = [rng.randrange(-9_000_000_000, 9_000_000_000) for _ in fractions]
    values = [s * 10**9 + f for s, f in zip(seconds, fractions, strict=True)]
    table = pa.table(
        {
            "id": pa.array(range(len(values)), pa.int64()),
            "ts": pa.array(values, pa.timestamp("ns")),
            "tz": pa.array(values, pa.timestamp("ns", tz="UTC")),
        }
    )
    pgbulk.write(table, "nanos", db=db, key=["id"])

    def text(ns: int) -> str:
        at = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=ns // 10**9)
        return f"{at:%Y-%m-%d %H:%M:%S}.{ns % 10**9:09d}"

    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE want (id bigint, ts timestamp, tz timestamptz)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO want VALUES (%s, %s::text::timestamp, %s::text::timestamptz)",
                [(i, text(v), text(v) + "+00") for i, v in enumerate(values)],
            )
    differ = (
        "SELECT count(*) FROM nanos n JOIN want w USING (id) "
        "WHERE n.ts IS DISTINCT FROM w.ts OR n.tz IS DISTINCT FROM w.tz"
    )
    assert rows(db, differ) == [(0,)]
    assert rows(db, "SELECT count(*) FROM nanos") == [(len(values),)]


def test_pandas_and_polars_frames_upsert_into_an_existing_table(db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, "
            "score double precision, seen timestamptz, note text DEFAULT 'none')"
        )
    frame = pd.DataFrame(
        {
            "ID": [1, 2],
            "name": ["Ada", "Grace"],
            "score": [1.5, float("nan")],
            "seen": pd.to_datetime(["2024-05-01T10:00:00Z", None], utc=True),
        }
    )
    first = pgbulk.write(frame, "people", db=db)
    assert (first.inserted, first.updated) == (2, 0)
    polars_frame = pl.DataFrame({"id": [2, 3], "name": ["Grace H.", "Linus"], "score": [2.0, None]})
    second = pgbulk.write(polars_frame, "people", db=db)
    assert (second.inserted, second.updated) == (1, 1)
    got = rows(db, "SELECT id, name, score::text, seen, note FROM people ORDER BY id")
    assert got == [
        (1, "Ada", "1.5", dt.datetime(2024, 5, 1, 10, tzinfo=UTC), "none"),
        (2, "Grace H.", "2", None, "none"),
        (3, "Linus", None, None, "none"),
    ]


def test_a_pandas_frame_keeps_each_dicts_keys_and_leaves_out_an_unnamed_index(db: str) -> None:
    # pyarrow alone makes {"a": 1} {"a": 1, "b": null}: a struct of every key.
    frame = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "doc": [
                {"a": 1},
                {"b": "x", "nested": [{"c": None}, {"d": 2.5}]},
                None,
                {"when": dt.date(2024, 5, 1), "n": pd.Series([7]).iloc[0], "ok": True},
            ],
            "plain": ["p", None, "q", "r"],
        },
        index=[10, 11, 12, 13],
    )
    report = pgbulk.write(frame, "docs", db=db, key=["id"])
    assert report.created_ddl is not None
    assert '"doc" jsonb' in report.created_ddl
    assert rows(db, "SELECT id, doc::text, plain FROM docs ORDER BY id") == [
        (1, '{"a": 1}', "p"),
        (2, '{"b": "x", "nested": [{"c": null}, {"d": 2.5}]}', None),
        (3, None, "q"),
        (4, '{"n": 7, "ok": true, "when": "2024-05-01"}', "r"),
    ]
    # A value JSON has no form for is named by row and column, nothing written.
    bad = pd.DataFrame({"id": [5, 6], "doc": [{"a": 1}, {"t": dt.timedelta(1)}]})
    with pytest.raises(pgbulk.DataError, match='row 2 of the data: column "doc": a timedelta') as e:
        pgbulk.write(bad, "docs", db=db)
    assert (e.value.column, e.value.line) == ("doc", 2)
    assert rows(db, "SELECT count(*) FROM docs") == [(4,)]
    # An unnamed index is no column (a filtered frame's is not 0, 1, 2, ...);
    # a named one is.
    filtered = frame[frame["id"] > 2].drop(columns="doc")
    assert pgbulk.write(filtered, "docs", db=db).unchanged == 2
    indexed = pd.DataFrame({"id": [1, 2], "v": ["a", "b"]}).set_index("id")
    created = pgbulk.write(indexed, "by_id", db=db, key=["id"]).created_ddl
    assert created is not None and '"id" bigint' in created
    assert rows(db, "SELECT id, v FROM by_id ORDER BY id") == [(1, "a"), (2, "b")]
    # Not every value a dict: pyarrow's reading as before (a list, which
    # goes into the jsonb column as a JSON array).
    lists = pd.DataFrame({"id": [7], "doc": [[1, 2]]})
    pgbulk.write(lists, "docs", db=db)
    assert rows(db, "SELECT doc::text FROM docs WHERE id = 7") == [("[1, 2]",)]


def test_a_pandas_column_of_decimals_keeps_each_values_scale_and_takes_bigger_ones(
    db: str,
) -> None:
    # pyarrow alone reads it as decimal128(5, 2): 1.5 became 1.50, and the
    # created numeric(5,2) refused the next batch's 1234.5.
    d = decimal.Decimal
    frame = pd.DataFrame(
        {"id": [1, 2, 3, 4, 5], "x": [d("1.5"), d("1.25"), d("1E+2"), None, d("NaN")]}
    )
    created = pgbulk.write(frame, "amounts", db=db, key=["id"]).created_ddl
    assert created is not None and '"x" numeric,' in created
    later = pd.DataFrame({"id": [6, 7], "x": [d("1234.5"), d("-0.000001")]})
    assert pgbulk.write(later, "amounts", db=db).inserted == 2
    # Each value as psycopg sends a Decimal (its text); NaN is missing, as
    # pandas reads it.
    assert rows(db, "SELECT id, x::text FROM amounts ORDER BY id") == [
        (1, "1.5"),
        (2, "1.25"),
        (3, "100"),
        (4, None),
        (5, None),
        (6, "1234.5"),
        (7, "-0.000001"),
    ]
    # Into a numeric(p,s) the server rounds each value's text, as for psycopg.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE priced (x numeric(6,2))")
        conn.execute("INSERT INTO priced VALUES (%s)", [d("2.345")])
    pgbulk.write(pd.DataFrame({"x": [d("2.345")]}), "priced", db=db)
    assert rows(db, "SELECT x::text FROM priced") == [("2.35",), ("2.35",)]


def test_instants_into_a_timestamp_column_are_its_wall_times_in_utc_and_refused_elsewhere(
    db: str,
) -> None:
    # PostgreSQL stores an instant in a timestamp (without time zone)
    # column as its wall time in the session's TimeZone (psycopg's and
    # pandas.to_sql's result): in UTC the encoder writes it; in a zone whose
    # offset changes with the date only the server knows it, so the write
    # is refused before anything is written.
    with psycopg.connect(db, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(f"ALTER DATABASE \"{name[0]}\" SET TimeZone = 'America/New_York'")
        conn.execute(
            "CREATE TABLE seen (id int, at timestamp, ats timestamp[], tz timestamptz, d date)"
        )
    at = pd.Timestamp("2024-01-01 10:00", tz="Europe/Paris")
    frame = pd.DataFrame({"id": [1], "at": [at], "tz": [at]})
    with pytest.raises(pgbulk.ConfigError, match=r'column "at" of public.seen .*America/New_York'):
        pgbulk.write(frame, "seen", db=db)
    listed = pa.table({"id": [1], "ats": pa.array([[at]], pa.list_(pa.timestamp("us", "UTC")))})
    with pytest.raises(pgbulk.ConfigError, match='column "ats"'):
        pgbulk.write(listed, "seen", db=db)
    # A date is the wall time's date (2024-01-01 02:00 in Paris is still
    # 2023-12-31 in New York).
    with pytest.raises(pgbulk.ConfigError, match='column "d" of public.seen is date'):
        pgbulk.write(pd.DataFrame({"id": [1], "d": [at]}), "seen", db=db)
    assert rows(db, "SELECT count(*) FROM seen") == [(0,)]
    # Wall times without a zone, and instants into timestamptz, are as given.
    naive = pd.DataFrame({"id": [2], "at": [at.tz_localize(None)], "tz": [at]})
    assert pgbulk.write(naive, "seen", db=db).inserted == 1
    utc = db + ("&" if "?" in db else "?") + "options=-c%20TimeZone%3DUTC"
    assert pgbulk.write(frame, "seen", db=utc).inserted == 1
    with psycopg.connect(utc) as conn:
        conn.execute("INSERT INTO seen VALUES (3, %s, NULL, %s)", [at.to_pydatetime()] * 2)
    assert rows(utc, "SELECT id, at::text, tz::text FROM seen ORDER BY id") == [
        (1, "2024-01-01 09:00:00", "2024-01-01 09:00:00+00"),
        (2, "2024-01-01 10:00:00", "2024-01-01 09:00:00+00"),
        (3, "2024-01-01 09:00:00", "2024-01-01 09:00:00+00"),
    ]


def test_a_pandas_period_column_is_refused_not_stored_as_its_ordinals(db: str) -> None:
    # pyarrow holds a Period as the periods since 1970: 2024-01 is 648.
    frame = pd.DataFrame({"id": [1], "month": pd.period_range("2024-01", periods=1, freq="M")})
    with pytest.raises(pgbulk.ConfigError, match='column "month": .*pandas.period'):
        pgbulk.write(frame, "months", db=db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE months (id int, month bigint)")
    with pytest.raises(pgbulk.ConfigError, match='column "month" of the data: .*to_timestamp'):
        pgbulk.write(frame, "months", db=db)
    frame["month"] = frame["month"].dt.to_timestamp()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DROP TABLE months")
    assert pgbulk.write(frame, "months", db=db).inserted == 1
    assert rows(db, "SELECT month::text FROM months") == [("2024-01-01 00:00:00",)]


def test_a_column_no_row_has_a_value_for_is_null(db: str) -> None:
    # pandas makes such a column Arrow's null type, polars its Null dtype
    # (also inside lists and structs): its values are NULL, not "".
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE sparse (id int, n int, t text)")
    frame = pd.DataFrame({"id": [1, 2], "n": [None, None], "t": [None, None]})
    assert pgbulk.write(frame, "sparse", db=db).inserted == 2
    assert rows(db, "SELECT count(*) FROM sparse WHERE n IS NULL AND t IS NULL") == [(2,)]
    nulls = pl.DataFrame(
        {"id": [1, 2], "l": [[None], None], "s": [{"x": None}, None], "n": [None, None]}
    )
    created = pgbulk.write(nulls, "polar", db=db).created_ddl
    assert created is not None and '"n" text' in created
    assert rows(db, "SELECT id, l, s::text, n FROM polar ORDER BY id") == [
        (1, [None], '{"x": null}', None),
        (2, None, None, None),
    ]


def test_lists_structs_and_booleans_into_json_columns_are_json(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int, tags jsonb, doc json, ok jsonb, raw jsonb)")
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "tags": [["a", "b"], []],
            "doc": [{"n": 1, "xs": [1.5, None]}, None],
            "ok": [True, False],
            "raw": ['{"kept": "as text"}', "[1, 2]"],
        }
    )
    assert pgbulk.write(frame, "docs", db=db).inserted == 2
    assert rows(db, "SELECT tags::text, doc::text, ok::text, raw::text FROM docs ORDER BY id") == [
        ('["a", "b"]', '{"n": 1, "xs": [1.5, null]}', "true", '{"kept": "as text"}'),
        ("[]", None, "false", "[1, 2]"),
    ]


def test_batches_commit_and_a_record_batch_reader_streams(db: str) -> None:
    schema = pa.schema([("n", pa.int64()), ("sq", pa.int64())])
    batches = (
        pa.record_batch(
            [pa.array(range(i, i + 1000)), pa.array([x * x for x in range(i, i + 1000)])],
            schema=schema,
        )
        for i in range(0, 10_000, 1000)
    )
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    report = pgbulk.write(reader, "squares", db=db, mode="append", batch_rows=2500)
    assert (report.inserted, report.batches) == (10_000, 4)
    assert rows(db, "SELECT count(*), sum(sq) FROM squares") == [
        (10_000, sum(x * x for x in range(10_000)))
    ]


def test_appends_into_a_table_go_on_two_connections(db: str) -> None:
    # No index: an empty table with one is filled as a new copy instead,
    # on one connection.
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE pairs (n bigint, v smallint)")
    total = 200_000
    n = pa.array(range(total), pa.int64())
    data = pa.table({"n": n, "v": pa.array([i % 30_000 for i in range(total)], pa.int16())})
    report = pgbulk.write(data, "pairs", db=db, mode="append", batch_rows=50_000)
    assert report.inserted == total, report
    assert "appended on 2 connections at once" in report.notes, report
    # Each batch in a transaction of its own, of at most 50,000 rows: full
    # ones, and at the end of the data at most one short one per stream.
    sizes = "SELECT count(*) FROM pairs GROUP BY xmin::text"
    batches = sorted(c for (c,) in rows(db, sizes))
    assert len(batches) == report.batches and 4 <= report.batches <= 6, (report, batches)
    assert batches[-1] <= 50_000 and sum(c < 50_000 for c in batches) <= 2, batches
    assert rows(db, "SELECT count(*), count(DISTINCT n), sum(v) FROM pairs") == [
        (total, total, sum(i % 30_000 for i in range(total)))
    ]
    # A value the column cannot hold fails its stream's batch, named by its
    # row of the data; the other stream stops, its batch in flight rolled
    # back: whole batches only.
    with psycopg.connect(db) as conn:
        conn.execute("TRUNCATE pairs")
    bad = pa.table(
        {"n": n, "v": pa.array([70_000 if i == 123_456 else 1 for i in range(total)], pa.int32())}
    )
    with pytest.raises(pgbulk.DataError) as caught:
        pgbulk.write(bad, "pairs", db=db, mode="append", batch_rows=10_000)
    assert (caught.value.column, caught.value.value) == ("v", "70000")
    assert "row 123457 of the data" in str(caught.value), caught.value
    committed = [c for (c,) in rows(db, sizes)]
    assert sum(committed) < total, committed
    assert all(c <= 10_000 for c in committed) and sum(c < 10_000 for c in committed) <= 2
    assert rows(db, "SELECT count(*) FROM pairs WHERE n = 123456") == [(0,)]
    # One stream keeps the rows in order.
    with psycopg.connect(db) as conn:
        conn.execute("TRUNCATE pairs")
    one = pgbulk.write(data, "pairs", db=db, mode="append", batch_rows=50_000, streams=1)
    assert one.batches == 4 and one.notes == [], one
    spans = "SELECT max(n) - min(n) + 1 = count(*) FROM pairs GROUP BY xmin::text"
    assert rows(db, spans) == [(True,)] * 4


def test_explicit_values_in_a_serial_key_advance_its_sequence(db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE tickets (id bigserial PRIMARY KEY, title text)")
        conn.execute(
            "CREATE TABLE countdown (id int GENERATED BY DEFAULT AS IDENTITY "
            "(INCREMENT -1 MINVALUE -1000 START -1) PRIMARY KEY, title text)"
        )
    data = pa.table({"id": pa.array([3, 10, 7], pa.int64()), "title": ["a", "b", "c"]})
    report = pgbulk.write(data, "tickets", db=db)
    assert report.inserted == 3, report
    assert (
        "public.tickets_id_seq (of public.tickets.id) advanced to 10, past the rows written"
        in report.notes
    ), report
    # The application's next insert takes the next number, not a taken one.
    assert rows(db, "INSERT INTO tickets (title) VALUES ('app') RETURNING id") == [(11,)]
    # Rows without ids are numbered by the sequence; it is never set back.
    pgbulk.write(pa.table({"title": ["d"]}), "tickets", db=db, mode="append")
    again = pgbulk.write(
        pa.table({"id": pa.array([1], pa.int64()), "title": ["e"]}), "tickets", db=db
    )
    assert not any("advanced" in n for n in again.notes), again
    assert rows(db, "INSERT INTO tickets (title) VALUES ('app') RETURNING id") == [(13,)]
    # A descending identity goes below the smallest value.
    down = pa.table({"id": pa.array([-5, -2], pa.int32()), "title": ["x", "y"]})
    pgbulk.write(down, "countdown", db=db, streams=2, mode="append")
    assert rows(db, "INSERT INTO countdown (title) VALUES ('app') RETURNING id") == [(-6,)]


def test_mistakes_are_the_right_exceptions(db: str) -> None:
    with pytest.raises(pgbulk.ConfigError, match="not Arrow data"):
        pgbulk.write([1, 2, 3], "t", db=db)
    with pytest.raises(pgbulk.ConfigError, match=r"LazyFrame: \.collect\(\) it first"):
        pgbulk.write(pl.LazyFrame({"a": [1]}), "t", db=db)
    with pytest.raises(pgbulk.ConfigError, match="does not exist"):
        pgbulk.write(pa.table({"a": [1]}), "missing", db=db, create=False)
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE small (id int PRIMARY KEY, v smallint)")
    with pytest.raises(pgbulk.ConfigError, match='column "extra" of the data is not a column'):
        pgbulk.write(pa.table({"id": [1], "extra": [1]}), "small", db=db)
    with pytest.raises(pgbulk.DataError) as caught:
        pgbulk.write(pa.table({"id": [1, 2], "v": [1, 70000]}), "small", db=db)
    assert (caught.value.table, caught.value.column, caught.value.value) == (
        "public.small",
        "v",
        "70000",
    )
    assert rows(db, "SELECT count(*) FROM small") == [(0,)], "the failed batch left nothing"
    # A value the server converts and refuses (no label of its enum): named
    # by its row of the data, its column and value.
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
        conn.execute("CREATE TABLE moods (id int, m mood)")
    with pytest.raises(pgbulk.DataError) as caught:
        pgbulk.write(pa.table({"id": [1, 2], "m": ["ok", "Sad"]}), "moods", db=db)
    assert (caught.value.table, caught.value.column, caught.value.value) == (
        "public.moods",
        "m",
        "Sad",
    )
    assert str(caught.value).startswith('row 2 of the data: column "m": invalid input value'), (
        caught.value
    )
    empty = pgbulk.write(pa.table({"a": pa.array([], pa.int64())}), "nothing", db=db)
    assert empty.nothing_to_load is not None and "was not created" in empty.nothing_to_load
    assert rows(db, "SELECT count(*) FROM pg_class WHERE relname = 'nothing'") == [(0,)]
    # A replace by no rows leaves the table as it is, and says so.
    kept = pgbulk.write(pa.table({"id": pa.array([], pa.int32())}), "small", db=db, mode="replace")
    assert kept.nothing_to_load is not None, kept
    assert "public.small was not replaced and keeps its rows" in kept.nothing_to_load
    report = pgbulk.write(pa.table({"id": [1], "extra": [1]}), "small", db=db, ignore_extra=True)
    assert report.inserted == 1 and any("extra" in n for n in report.notes)
    # A pandas column that pyarrow cannot convert: a DataError naming it,
    # pyarrow's exception its cause, no table created.
    with pytest.raises(pgbulk.DataError, match="cannot be read as Arrow") as mixed:
        pgbulk.write(pd.DataFrame({"id": [1, 2], "v": [1, "x"]}), "mixed", db=db)
    assert mixed.value.column == "v"
    assert isinstance(mixed.value.__cause__, pa.ArrowInvalid)
    assert rows(db, "SELECT count(*) FROM pg_class WHERE relname = 'mixed'") == [(0,)]
    # A column whose Arrow type the reader lacks (polars' Int128 exports as
    # an extension format of its own) is named.
    if hasattr(pl, "Int128"):
        wide = pl.DataFrame({"id": [1], "big": pl.Series([2**100], dtype=pl.Int128)})
        with pytest.raises(pgbulk.ConfigError, match='cannot be read: column "big"'):
            pgbulk.write(wide, "wide_ints", db=db)


def test_ctrl_c_stops_a_write_keeping_whole_batches(db: str) -> None:
    import _thread
    import threading

    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE long (id bigint)")
    total = 6_000_000
    # A Table: its stream is read without running Python code, so the
    # interrupt reaches pgbulk (a Python generator behind a reader would
    # receive the KeyboardInterrupt itself, and the write fail with it).
    reader = pa.table({"id": pa.array(range(total), pa.int64())})
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        pgbulk.write(reader, "long", db=db, mode="append", batch_rows=100_000)
    timer.cancel()
    (committed,) = rows(db, "SELECT count(*) FROM long")[0]
    assert committed < total and committed % 100_000 == 0, committed


def test_an_upsert_changing_most_rows_rewrites_the_table_unless_told_not_to(db: str) -> None:
    n = 120_000
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE w (id bigint PRIMARY KEY, v text)")
        conn.execute("INSERT INTO w SELECT g, 'old' FROM generate_series(0, %s) g", (n - 1,))
        conn.execute("ANALYZE w")
    oid = "SELECT 'w'::regclass::oid::bigint"
    rewrites = rows(db, "SELECT current_setting('server_version_num')::int >= 150000")[0][0]
    before = rows(db, oid)

    def data(v: str) -> pa.Table:
        return pa.table({"id": pa.array(range(n + 10_000), pa.int64()), "v": [v] * (n + 10_000)})

    report = pgbulk.write(data("new"), "w", db=db)
    assert (report.inserted, report.updated, report.unchanged) == (10_000, n, 0)
    assert rows(db, "SELECT count(*) FILTER (WHERE v = 'new') FROM w") == [(n + 10_000,)]
    assert (rows(db, oid) != before) == rewrites
    before = rows(db, oid)
    report = pgbulk.write(data("x"), "w", db=db, rewrite=False)
    assert report.updated == n + 10_000
    assert rows(db, "SELECT count(*) FILTER (WHERE v = 'x') FROM w") == [(n + 10_000,)]
    assert rows(db, oid) == before

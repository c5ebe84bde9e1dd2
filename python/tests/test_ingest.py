"""pgbulk.ingest: pg-bulk-ingest's ``ingest(conn, metadata, batches, ...)``
on pgbulk's engine, through SQLAlchemy connections over psycopg 3 and
psycopg2."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from conftest import rows
from sqlalchemy.dialects import postgresql as pg

import pgbulk
from pgbulk import Delete, HighWatermark, Mode, Upsert

DRIVERS = ["postgresql+psycopg", "postgresql+psycopg2"]


@pytest.fixture(params=DRIVERS)
def engine(request: pytest.FixtureRequest, db: str) -> Iterator[sa.Engine]:
    url = sa.make_url(db).set(drivername=request.param)
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def keyed(metadata: sa.MetaData, name: str = "t", schema: str | None = "s") -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.String),
        schema=schema,
    )


def run(engine: sa.Engine, metadata: sa.MetaData, batches: Any, **kw: Any) -> pgbulk.IngestReport:
    with engine.connect() as conn:
        return pgbulk.ingest(conn, metadata, batches, **kw)


def test_a_type_matrix_is_stored_as_postgresql_reads_it(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "types",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("big", sa.BigInteger),
        sa.Column("num", sa.Numeric(20, 5)),
        sa.Column("f", sa.Float),
        sa.Column("ok", sa.Boolean),
        sa.Column("s", sa.String),
        sa.Column("d", sa.Date),
        sa.Column("ts", sa.DateTime),
        sa.Column("tstz", sa.DateTime(timezone=True)),
        sa.Column("tm", sa.Time),
        sa.Column("iv", sa.Interval),
        sa.Column("u", pg.UUID),
        sa.Column("b", pg.BYTEA),
        sa.Column("j", pg.JSON),
        sa.Column("jb", pg.JSONB),
        sa.Column("a", sa.ARRAY(sa.Integer)),
        sa.Column("a2", sa.ARRAY(sa.Text, dimensions=2)),
        schema="s",
    )
    u = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    utc = dt.timezone.utc
    full = (
        1,
        2**62,
        decimal.Decimal("-12345.67891"),
        0.1,
        True,
        'tab\there, "quote", nul-free é😀',
        dt.date(2024, 2, 29),
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.datetime(1999, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.time(23, 59, 59, 5),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        u,
        b"\x00\x80\xff",
        {"k": [1, None, "x"]},
        [1, {"n": None}],
        [1, None, 3],
        [["a", None], ['"b"', "c,d"]],
    )
    empty = (2,) + (None,) * 16
    batches = lambda _: [(None, None, [(table, full), (table, empty)])]  # noqa: E731
    run(engine, metadata, batches)
    with engine.connect() as conn:
        got = conn.execute(sa.select(table).order_by(table.c.id)).fetchall()
    assert got[1] == empty
    first = list(got[0])
    assert first[8] == dt.datetime(2000, 1, 1, 4, 0, tzinfo=utc)
    first[8] = full[8]
    assert tuple(first) == full


def test_upsert_last_row_per_key_wins_and_unchanged_rows_are_not_rewritten(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    batches = lambda _: [(None, None, [(table, (1, "a")), (table, (2, "b"))])]  # noqa: E731
    run(engine, metadata, batches)
    batches = lambda _: [  # noqa: E731
        (None, None, [(table, (2, "b")), (table, (1, "x")), (table, (1, "y")), (table, (3, "c"))])
    ]
    report = run(engine, metadata, batches)
    assert rows(db, "SELECT id, v FROM s.t ORDER BY id") == [(1, "y"), (2, "b"), (3, "c")]
    counts = report.tables["s.t"]
    assert (counts.inserted, counts.updated, counts.unchanged, counts.repeated) == (1, 1, 1, 1)


def test_upsert_off_appends_and_a_repeated_key_fails_the_batch(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    run(engine, metadata, lambda _: [(None, None, [(table, (1, "a"))])], upsert=Upsert.OFF)
    with pytest.raises(pgbulk.DataError, match="duplicate key") as failed:
        run(engine, metadata, lambda _: [(7, None, [(table, (1, "b"))])], upsert=Upsert.OFF)
    assert failed.value.table == "s.t"
    assert rows(db, "SELECT id, v FROM s.t") == [(1, "a")]


def test_delete_before_first_batch_replaces_rows_and_zero_batches_delete_nothing(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    run(engine, metadata, lambda _: [(None, None, [(table, (1, "a")), (table, (2, "b"))])])
    run(engine, metadata, lambda _: [], delete=Delete.BEFORE_FIRST_BATCH)
    assert rows(db, "SELECT count(*) FROM s.t") == [(2,)]
    run(
        engine,
        metadata,
        lambda _: [(None, None, [(table, (3, "c"))]), (None, None, [(table, (4, "d"))])],
        delete=Delete.BEFORE_FIRST_BATCH,
    )
    assert rows(db, "SELECT id FROM s.t ORDER BY id") == [(3,), (4,)]


def test_replace_atomic_mode_shows_every_batch_at_once(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    run(engine, metadata, lambda _: [(None, None, [(table, (1, "a"))])])
    seen: list[list[tuple[Any, ...]]] = []

    def batches(_: Any) -> Iterator[Any]:
        yield None, None, [(table, (2, "b"))]
        seen.append(rows(db, "SELECT id FROM s.t ORDER BY id"))
        yield 9, None, [(table, (3, "c"))]

    mode = Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH
    run(engine, metadata, batches, ingest_mode=mode)
    assert seen == [[(1,)]]
    assert rows(db, "SELECT id FROM s.t ORDER BY id") == [(2,), (3,)]
    got: list[Any] = []
    run(engine, metadata, lambda hw: got.append(hw) or [])
    assert got == [9]


def test_watermarks_latest_earliest_explicit_and_computed(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    got: list[Any] = []

    def batches(hw: Any) -> Iterator[Any]:
        got.append(hw)
        yield {"at": "2024-01-01"}, None, [(table, (1, "a"))]
        yield (lambda: {"at": "2024-01-02"}), None, []

    run(engine, metadata, batches)
    run(engine, metadata, batches)
    run(engine, metadata, batches, high_watermark=HighWatermark.EARLIEST)
    run(engine, metadata, batches, high_watermark=[1, "two"])
    assert got == [None, {"at": "2024-01-02"}, None, [1, "two"]]


def test_an_exception_from_the_batches_is_raised_and_earlier_batches_stay(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)

    class Boom(Exception):
        pass

    def rows_then_boom() -> Iterator[Any]:
        yield table, (3, "c")
        raise Boom("in the rows")

    def batches(hw: Any) -> Iterator[Any]:
        yield 1, None, [(table, (1, "a"))]
        yield 2, None, rows_then_boom()

    with pytest.raises(Boom):
        run(engine, metadata, batches)
    assert rows(db, "SELECT id FROM s.t") == [(1,)]
    got: list[Any] = []
    run(engine, metadata, lambda hw: got.append(hw) or [])
    assert got == [1]

    def failing_watermark() -> Any:
        raise Boom("in the watermark")

    with pytest.raises(Boom):
        run(engine, metadata, lambda _: [(failing_watermark, None, [(table, (5, "e"))])])
    assert rows(db, "SELECT id FROM s.t") == [(1,)]


def test_several_tables_per_batch_undeclared_tables_skipped_and_odd_names(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    odd = sa.Table(
        'We"ird.na me😀',
        metadata,
        sa.Column("Key", sa.Integer, primary_key=True),
        sa.Column("va.l ue", sa.String),
        schema='Sch"ema.😀',
    )
    plain = keyed(metadata, "plain", schema=None)
    other = keyed(sa.MetaData(), "other")

    def batch() -> Iterator[Any]:
        for i in range(3000):
            yield odd, (i, str(i))
            yield other, (i, "skipped")
            if i % 2:
                yield plain, (i, "p")

    report = run(engine, metadata, lambda _: [(None, None, batch())])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(odd)).scalar() == 3000
        assert conn.execute(sa.select(sa.func.count()).select_from(plain)).scalar() == 1500
        assert sa.inspect(conn).has_table("other", schema="s") is False
    assert report.skipped == {"s.other": 3000}


def test_tables_appear_with_the_first_batch_and_exist_after_zero_batches(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    before: list[bool] = []

    def batches(_: Any) -> Iterator[Any]:
        with engine.connect() as conn:
            before.append(sa.inspect(conn).has_table("t", schema="s"))
        yield None, None, [(table, (1, "a"))]

    run(engine, metadata, batches)
    assert before == [False]
    other = sa.MetaData()
    keyed(other, "empty")
    run(engine, other, lambda _: [])
    assert rows(db, "SELECT count(*) FROM s.empty") == [(0,)]


def test_a_changed_declaration_migrates_in_place_and_keeps_rows(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    run(engine, metadata, lambda _: [(None, None, [(table, (1, "a"))])])
    oid = rows(db, "SELECT 's.t'::regclass::oid")
    changed = sa.MetaData()
    wider = sa.Table(
        "t",
        changed,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.String),
        sa.Column("w", sa.Integer),
        sa.Index("t_v", "v"),
        schema="s",
    )
    run(engine, changed, lambda _: [(None, None, [(wider, (2, "b", 7))])])
    assert rows(db, "SELECT id, v, w FROM s.t ORDER BY id") == [(1, "a", None), (2, "b", 7)]
    assert rows(db, "SELECT 's.t'::regclass::oid") == oid
    assert rows(db, "SELECT indexname FROM pg_indexes WHERE tablename = 't' AND indexname = 't_v'")
    # A single integer primary key stays an integer (no SERIAL default).
    assert rows(
        db,
        "SELECT column_default FROM information_schema.columns"
        " WHERE table_schema = 's' AND table_name = 't' AND column_name = 'id'",
    ) == [(None,)]


def test_enum_and_domain_types_are_created_as_create_all_creates_them(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    mood = sa.Enum("happy", "sad", name="mood")
    table = sa.Table(
        "feelings",
        metadata,
        sa.Column("id", pg.DOMAIN("positive", sa.Integer, check="VALUE > 0"), primary_key=True),
        sa.Column("now", mood),
        sa.Column("history", pg.ARRAY(mood)),
        sa.Column("label", pg.ENUM("x", "y", name="label", schema="s")),
        schema="s",
    )
    report = run(
        engine, metadata, lambda _: [(None, None, [(table, (1, "sad", ["happy", "sad"], "x"))])]
    )
    assert "s.feelings: create type public.mood" in report.migrations, report.migrations
    # Where create_all puts them: an enum of no schema in the default one,
    # also for a table in another.
    types = (
        "SELECT n.nspname::text, t.typname::text FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE t.typname IN ('mood', 'label', 'positive') ORDER BY 2"
    )
    assert rows(db, types) == [("s", "label"), ("public", "mood"), ("public", "positive")]
    read = "SELECT id, now::text, history::text, label::text FROM s.feelings ORDER BY id"
    assert rows(db, read) == [(1, "sad", "{happy,sad}", "x")]
    # A type that exists is used as it is: a label added since stays, and
    # nothing is created again.
    with psycopg.connect(db) as conn:
        conn.execute("ALTER TYPE mood ADD VALUE 'calm'")
    again = run(engine, metadata, lambda _: [(None, None, [(table, (2, "calm", [], "y"))])])
    assert not [m for m in again.migrations if "create type" in m], again.migrations
    assert rows(db, read)[1] == (2, "calm", "{}", "y")
    # The domain's check and the enum's labels are the server's to apply.
    with pytest.raises(pgbulk.DataError):
        run(engine, metadata, lambda _: [(None, None, [(table, (0, "sad", [], "x"))])])
    with pytest.raises(pgbulk.DataError):
        run(engine, metadata, lambda _: [(None, None, [(table, (3, "glad", [], "x"))])])


def test_python_enum_members_are_stored_as_sqlalchemy_stores_them(
    engine: sa.Engine, db: str
) -> None:
    class Color(enum.Enum):
        red = 1
        green = 2
        crimson = 1  # an alias of red

    metadata = sa.MetaData()
    table = sa.Table(
        "paint",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("by_name", sa.Enum(Color, name="color")),
        sa.Column(
            "by_value",
            sa.Enum(Color, name="color_value", values_callable=lambda e: [str(m.value) for m in e]),
        ),
    )
    run(
        engine,
        metadata,
        lambda _: [
            (
                None,
                None,
                [
                    (table, (1, Color.red, Color.green)),
                    (table, (2, Color.crimson, "1")),
                    (table, (3, "green", None)),
                ],
            )
        ],
    )
    read = "SELECT id, by_name::text, by_value::text FROM paint ORDER BY id"
    assert rows(db, read) == [(1, "red", "2"), (2, "red", "1"), (3, "green", None)]
    # What SQLAlchemy itself stores.
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=4, by_name=Color.crimson, by_value=Color.green))
    assert rows(db, read)[3] == (4, "red", "2")


def test_rows_of_a_dataframe_keep_their_values_and_pandas_missing_markers_are_null(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "frame_rows",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime),
        sa.Column("n", sa.Integer),
        sa.Column("f", sa.Float),
        sa.Column("ok", sa.Boolean),
        sa.Column("ns", sa.DateTime),
    )
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "at": [pd.Timestamp("2024-01-01 10:00"), pd.NaT],
            "n": pd.array([5, None], dtype="Int64"),
            "f": [0.5, np.nan],
            "ok": [np.bool_(True), None],
            "ns": [np.datetime64("2024-01-01T10:00:00.123456789"), np.datetime64("NaT")],
        }
    )
    values = [tuple(r) for r in frame.itertuples(index=False)]
    run(engine, metadata, lambda _: [(None, None, [(table, v) for v in values])])
    # A float NaN is PostgreSQL's NaN; NaT and NA are missing.
    read = "SELECT id, at::text, n, f::text, ok, ns::text FROM frame_rows ORDER BY id"
    assert rows(db, read) == [
        (1, "2024-01-01 10:00:00", 5, "0.5", True, "2024-01-01 10:00:00.123457"),
        (2, None, None, "NaN", None, None),
    ]


def test_a_pg_bulk_ingest_watermark_in_the_table_comment_is_picked_up(
    engine: sa.Engine, db: str
) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE SCHEMA s; CREATE TABLE s.t (id integer PRIMARY KEY, v varchar)")
        comment = json.dumps({"pg-bulk-ingest": {"high-watermark": "2024-05-01"}, "other": 1})
        conn.execute(f"COMMENT ON TABLE s.t IS '{comment}'")
    metadata = sa.MetaData()
    table = keyed(metadata)
    got: list[Any] = []

    def batches(hw: Any) -> Iterator[Any]:
        got.append(hw)
        yield "2024-05-02", None, [(table, (1, "a"))]

    run(engine, metadata, batches)
    run(engine, metadata, batches)
    assert got == ["2024-05-01", "2024-05-02"]


def test_bad_values_and_arguments_are_clear_errors(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    with pytest.raises(pgbulk.DataError) as failed:
        run(engine, metadata, lambda _: [(None, None, [(table, ("x", "a"))])])
    assert "integer" in str(failed.value)
    with pytest.raises(pgbulk.DataError, match="2 columns"):
        run(engine, metadata, lambda _: [(None, None, [(table, (1, "a", "extra"))])])
    with pytest.raises(pgbulk.ConfigError, match="visibility"):
        run(engine, metadata, lambda _: [], visibility="__SOMETIME__")
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        with pytest.raises(pgbulk.ConfigError, match="transaction in progress"):
            pgbulk.ingest(conn, metadata, lambda _: [])


def test_on_before_visible_joins_the_batch_transaction(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE SCHEMA s; CREATE TABLE s.audit (batch text, n bigint)")
    run(engine, metadata, lambda _: [])
    seen: list[tuple[Any, ...]] = []

    def hook(conn: sa.Connection, ingest_table: sa.Table, batch_metadata: Any) -> None:
        n = conn.execute(sa.select(sa.func.count()).select_from(ingest_table)).scalar()
        outside = rows(db, "SELECT count(*) FROM s.t")[0][0]
        seen.append((batch_metadata, n, outside))
        conn.execute(sa.text("INSERT INTO s.audit VALUES (:b, :n)"), {"b": batch_metadata, "n": n})
        conn.commit()  # the batch's transaction stays pgbulk's
        assert rows(db, "SELECT count(*) FROM s.audit")[0][0] == len(seen) - 1

    batches = lambda _: [  # noqa: E731
        (1, "first", [(table, (1, "a")), (table, (2, "b"))]),
        (2, "second", [(table, (3, "c"))]),
    ]
    run(engine, metadata, batches, on_before_visible=hook)
    assert seen == [("first", 2, 0), ("second", 3, 2)]
    assert rows(db, "SELECT batch, n FROM s.audit ORDER BY n") == [("first", 2), ("second", 3)]

    class Refused(Exception):
        pass

    def refuse(conn: sa.Connection, ingest_table: sa.Table, batch_metadata: Any) -> None:
        conn.execute(sa.text("INSERT INTO s.audit VALUES ('refused', 0)"))
        raise Refused(batch_metadata)

    with pytest.raises(Refused):
        run(
            engine,
            metadata,
            lambda _: [(3, "third", [(table, (4, "d"))])],
            on_before_visible=refuse,
        )

    def fail_quietly(conn: sa.Connection, ingest_table: sa.Table, batch_metadata: Any) -> None:
        try:
            conn.execute(sa.text("SELECT 1/0"))
        except sa.exc.DBAPIError:
            pass

    with pytest.raises(pgbulk.DataError, match="rolled back"):
        run(
            engine,
            metadata,
            lambda _: [(4, None, [(table, (5, "e"))])],
            on_before_visible=fail_quietly,
        )
    assert rows(db, "SELECT count(*) FROM s.t") == [(3,)]
    assert rows(db, "SELECT count(*) FROM s.audit") == [(2,)]
    got: list[Any] = []
    run(engine, metadata, lambda hw: got.append(hw) or [])
    assert got == [2]


def test_dates_are_stored_as_their_text_would_be_in_any_column(engine: sa.Engine, db: str) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "dates",
        metadata,
        sa.Column("d", sa.Date),
        sa.Column("s", sa.Text),
        sa.Column("ts", sa.DateTime),
        sa.Column("a", sa.ARRAY(sa.Date)),
        schema="s",
    )
    days = [dt.date(1, 1, 1), dt.date(2000, 2, 29), dt.date(9999, 12, 31)]
    batch = [(table, (d, d, d, [d, None])) for d in days]
    run(engine, metadata, lambda _: [(None, None, batch)])
    got = rows(db, "SELECT d, s, ts, a FROM s.dates ORDER BY d")
    assert got == [(d, d.isoformat(), dt.datetime(d.year, d.month, d.day), [d, None]) for d in days]


def test_values_both_postgresql_and_pg_bulk_ingest_would_store_are_stored(
    engine: sa.Engine, db: str
) -> None:
    # A whole float or Decimal in an integer column and an int in a text
    # column are what PostgreSQL's casts and pg-bulk-ingest's str()/int()
    # both store; a timedelta in a text column reads as PostgreSQL prints
    # an interval.
    metadata = sa.MetaData()
    table = sa.Table(
        "casts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer),
        sa.Column("big", sa.BigInteger),
        sa.Column("s", sa.String(30)),
        sa.Column("iv", sa.Interval),
        sa.Column("ivs", sa.Text),
        sa.Column("b", sa.LargeBinary),
    )
    d = decimal.Decimal
    batch = [
        (
            table,
            (
                1,
                3.0,
                d("1E+5"),
                42,
                dt.timedelta(days=-1, seconds=5),
                dt.timedelta(days=-1, seconds=5),
                b"\x01",
            ),
        ),
        (
            table,
            (
                2,
                np.float64(-0.0),
                d("-7.000"),
                -(2**63),
                dt.timedelta(microseconds=10),
                dt.timedelta(microseconds=10),
                "\\x02",
            ),
        ),
        (
            table,
            (
                3,
                None,
                d(2**70),
                2**70,
                dt.timedelta(days=1, hours=2),
                dt.timedelta(days=1, hours=2),
                None,
            ),
        ),
    ]
    with pytest.raises(pgbulk.DataError, match="out of range for type bigint"):
        run(engine, metadata, lambda _: [(None, None, batch)])
    batch[2] = (
        table,
        (
            3,
            None,
            d(2**40),
            2**70,
            dt.timedelta(days=1, hours=2),
            dt.timedelta(days=1, hours=2),
            None,
        ),
    )
    run(engine, metadata, lambda _: [(None, None, batch)])
    assert rows(
        db, "SELECT id, n, big, s, iv::text, ivs, iv = ivs::interval, b FROM casts ORDER BY id"
    ) == [
        (1, 3, 100000, "42", "-1 days +00:00:05", "-1 days +00:00:05", True, b"\x01"),
        (2, 0, -7, "-9223372036854775808", "00:00:00.00001", "00:00:00.00001", True, b"\x02"),
        (3, None, 2**40, "1180591620717411303424", "1 day 02:00:00", "1 day 02:00:00", True, None),
    ]


def test_values_postgresql_and_pg_bulk_ingest_store_differently_are_refused(
    engine: sa.Engine, db: str
) -> None:
    # PostgreSQL's cast rounds a fraction away, pg-bulk-ingest's int()
    # truncated it; a bytea column takes no other value's str().
    metadata = sa.MetaData()
    table = sa.Table(
        "refused",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.SmallInteger),
        sa.Column("b", pg.BYTEA),
        schema="s",
    )
    skipped = sa.Table("skipped", sa.MetaData(), sa.Column("id", sa.Integer))
    for bad, column, message in [
        ((2, 2.5, None), "n", "float value 2.5 has a fraction"),
        ((2, decimal.Decimal("2.5"), None), "n", "holds whole numbers: round or truncate"),
        ((2, float("nan"), None), "n", "NaN does not fit"),
        ((2, 1e6, None), "n", "out of range for type smallint"),
        ((2, None, dt.date(2024, 1, 1)), "b", "takes bytes .* not a date"),
        ((2, None, 12), "b", "takes bytes .* not a int"),
    ]:
        batch = [(skipped, (0,)), (table, (1, 1, None)), (table, bad)]
        with pytest.raises(pgbulk.DataError, match=message) as failed:
            run(engine, metadata, lambda _, batch=batch: [(None, None, batch)])
        e = failed.value
        # Rows are counted as the engine counts them: the batch's rows of
        # declared tables.
        assert (e.table, e.column, e.batch, e.row) == ("s.refused", column, 1, 2), str(e)
    # Nothing of the first batch stays, the table it would create neither.
    assert rows(db, "SELECT to_regclass('s.refused')") == [(None,)]


def test_a_batch_changing_most_rows_rewrites_the_table_unless_told_not_to(
    engine: sa.Engine, db: str
) -> None:
    metadata = sa.MetaData()
    table = keyed(metadata)
    n = 120_000

    def batch(v: str, keys: int) -> Any:
        return lambda _: [(None, None, ((table, (i, v)) for i in range(keys)))]

    run(engine, metadata, batch("old", n))
    oid = "SELECT 's.t'::regclass::oid::bigint"
    rewrites = rows(db, "SELECT current_setting('server_version_num')::int >= 150000")[0][0]
    before = rows(db, oid)
    # Every row changed and 10,000 new: a new copy of the table (PostgreSQL
    # 15+), counted exactly.
    report = run(engine, metadata, batch("new", n + 10_000))
    counts = report.tables["s.t"]
    assert (counts.inserted, counts.updated, counts.unchanged) == (10_000, n, 0)
    assert rows(db, "SELECT count(*), count(*) FILTER (WHERE v = 'new') FROM s.t") == [
        (n + 10_000, n + 10_000)
    ]
    assert (rows(db, oid) != before) == rewrites
    assert any("rewritten" in m for m in report.migrations) == rewrites
    before = rows(db, oid)
    report = run(engine, metadata, batch("x", n + 10_000), rewrite=False)
    assert rows(db, "SELECT count(*) FILTER (WHERE v = 'x') FROM s.t") == [(n + 10_000,)]
    assert rows(db, oid) == before
    assert not any("rewritten" in m for m in report.migrations)

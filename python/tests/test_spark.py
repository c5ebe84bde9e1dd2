"""``df.write.format("pgbulk")`` on a real local Spark (local[2,2]: two
threads, two attempts per task) against the suite's throwaway cluster."""

from __future__ import annotations

import datetime
import decimal
import logging
import os
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest
from conftest import rows
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

import pgbulk
import pgbulk.spark


@pytest.fixture(scope="module")
def spark(server: str) -> Iterator[SparkSession]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    # py4j says goodbye at exit, after pytest closed the streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = (
        SparkSession.builder.master("local[2,2]")
        .appName("pgbulk-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    pgbulk.spark.register(session)
    yield session
    session.stop()


def stages(url: str) -> list[tuple]:
    return rows(url, "SELECT relname FROM pg_class WHERE relname LIKE 'pgbulk\\_stage\\_%'")


def stock(spark: SparkSession, n: int, value: int, partitions: int = 2):  # type: ignore[no-untyped-def]
    return spark.range(n, numPartitions=partitions).select(
        F.col("id").alias("pos"), (F.col("id") * value).alias("stock")
    )


def test_upsert_into_a_table_holding_half_the_keys(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
        conn.execute("INSERT INTO stock SELECT g, -1 FROM generate_series(0, 499) g")
        # These keep their values: the upsert must not rewrite them.
        conn.execute("UPDATE stock SET stock = pos * 3 WHERE pos < 100")
    xmin_before = rows(db, "SELECT pos, xmin::text FROM stock WHERE pos < 100 ORDER BY pos")
    (
        stock(spark, 1000, 3)
        .write.format("pgbulk")
        .option("url", db)
        .option("table", "stock")
        .mode("append")
        .save()
    )
    assert rows(db, "SELECT count(*), sum(stock) FROM stock") == [(1000, 3 * sum(range(1000)))]
    assert rows(db, "SELECT pos, xmin::text FROM stock WHERE pos < 100 ORDER BY pos") == (
        xmin_before
    )
    assert stages(db) == []


def test_a_task_failing_after_staging_leaves_no_trace(spark: SparkSession, db: str) -> None:
    # No key: every row is appended, so a partition staged twice would show.
    df = stock(spark, 2000, 1, partitions=4)
    (
        df.write.format("pgbulk")
        .option("url", db)
        .option("table", "events")
        .option("test_fail_after_staging", "true")
        .mode("append")
        .save()
    )
    assert rows(db, "SELECT count(*), count(DISTINCT pos), sum(stock) FROM events") == [
        (2000, 2000, sum(range(2000)))
    ]
    assert stages(db) == []


def test_a_failed_job_writes_nothing_and_drops_its_stages(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
        conn.execute("INSERT INTO stock VALUES (1, 1)")

    def fail_at_777(pos):  # type: ignore[no-untyped-def]  # (hints would make it a pandas UDF)
        if pos == 777:
            raise ValueError("bad row 777")
        return pos

    explode = F.udf(fail_at_777, LongType())
    df = stock(spark, 1000, 5).withColumn("pos", explode("pos"))
    with pytest.raises(Exception, match="bad row 777"):
        df.write.format("pgbulk").option("url", db).option("table", "stock").mode("append").save()
    assert rows(db, "SELECT * FROM stock") == [(1, 1)]
    assert stages(db) == []


def test_overwrite_replaces_atomically_keeping_views(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
        conn.execute("INSERT INTO stock SELECT g, 0 FROM generate_series(1000, 1999) g")
        conn.execute("CREATE VIEW big AS SELECT pos FROM stock WHERE stock > 100")
    pgbulk.spark.write(stock(spark, 300, 2), "stock", url=db, mode="overwrite")
    assert rows(db, "SELECT count(*), min(pos), max(pos) FROM stock") == [(300, 0, 299)]
    assert rows(db, "SELECT count(*) FROM big") == [(249,)]


def test_keys_across_partitions_keep_the_last_partitions_row(spark: SparkSession, db: str) -> None:
    schema = StructType([StructField("k", LongType()), StructField("v", StringType())])
    # Three partitions, in order: (1, first), (2, a) | (1, second), (3, b) |
    # (1, third), (4, c).
    data = [(1, "first"), (2, "a"), (1, "second"), (3, "b"), (1, "third"), (4, "c")]
    df = spark.createDataFrame(spark.sparkContext.parallelize(data, 3), schema)
    assert df.rdd.getNumPartitions() == 3
    expected = [(1, "third"), (2, "a"), (3, "b"), (4, "c")]
    pgbulk.spark.write(df, "kv", url=db, key=["k"])
    assert rows(db, "SELECT k, v FROM kv ORDER BY k") == expected
    with pytest.raises(Exception, match="repeat the key"):
        pgbulk.spark.write(df, "kv", url=db, key=["k"], on_duplicate="error")
    assert rows(db, "SELECT k, v FROM kv ORDER BY k") == expected


def test_a_type_matrix_round_trips(spark: SparkSession, db: str) -> None:
    schema = StructType(
        [
            StructField("id", IntegerType(), False),
            StructField("big", LongType()),
            StructField("f", DoubleType()),
            StructField("d", DecimalType(12, 3)),
            StructField("s", StringType()),
            StructField("b", BooleanType()),
            StructField("day", DateType()),
            StructField("ts", TimestampType()),
            StructField("raw", BinaryType()),
            StructField("ints", ArrayType(IntegerType())),
        ]
    )
    ts = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=datetime.timezone.utc)
    data = [
        (
            1,
            2**62,
            1.5,
            decimal.Decimal("-123456789.125"),
            "ünïcode 'quoted' \"x\"",
            True,
            datetime.date(1999, 12, 31),
            ts,
            b"\x00\xff",
            [1, None, 3],
        ),
        (2, None, float("nan"), None, None, None, None, None, None, None),
    ]
    df = spark.createDataFrame(data, schema)
    pgbulk.spark.write(df, "matrix", url=db, key=["id"])
    types = rows(
        db,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'matrix'::regclass AND attnum > 0 ORDER BY attnum",
    )
    assert types == [
        ("id", "integer"),
        ("big", "bigint"),
        ("f", "double precision"),
        ("d", "numeric(12,3)"),
        ("s", "text"),
        ("b", "boolean"),
        ("day", "date"),
        ("ts", "timestamp with time zone"),
        ("raw", "bytea"),
        ("ints", "integer[]"),
    ]
    got = rows(db, "SELECT * FROM matrix ORDER BY id")
    assert got[0] == (
        1,
        2**62,
        1.5,
        decimal.Decimal("-123456789.125"),
        "ünïcode 'quoted' \"x\"",
        True,
        datetime.date(1999, 12, 31),
        ts,
        b"\x00\xff",
        [1, None, 3],
    )
    assert got[1][0] == 2 and got[1][2] != got[1][2]  # NaN
    assert got[1][1:2] + got[1][3:] == (None,) * 8


def test_two_concurrent_writes_into_one_table(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
    errors: list[BaseException] = []

    def run(start: int) -> None:
        try:
            df = spark.range(start, start + 600, numPartitions=2).select(
                F.col("id").alias("pos"), F.lit(start).cast("long").alias("stock")
            )
            pgbulk.spark.write(df, "stock", url=db)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in (0, 300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [str(e) for e in errors] == []
    # Keys 300..599 were written by both; either write may have merged last.
    assert rows(db, "SELECT count(*) FROM stock") == [(900,)]
    assert rows(db, "SELECT count(*) FROM stock WHERE pos < 300 AND stock = 0") == [(300,)]
    assert rows(db, "SELECT count(*) FROM stock WHERE pos >= 600 AND stock = 300") == [(300,)]
    assert stages(db) == []


def test_stale_stages_are_dropped_by_the_next_write(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
        # A write that began in 2001 and never committed; and one that
        # began a minute ago (another driver still running).
        conn.execute('CREATE TABLE "pgbulk_stage_003b9aca00deadbeef_0" (pos bigint, stock bigint)')
        recent = f"{int(datetime.datetime.now().timestamp()) - 60:010x}deadbeef"
        conn.execute(f'CREATE TABLE "pgbulk_stage_{recent}_0" (pos bigint, stock bigint)')
    pgbulk.spark.write(stock(spark, 10, 1), "stock", url=db)
    assert stages(db) == [(f"pgbulk_stage_{recent}_0",)]
    assert rows(db, "SELECT count(*) FROM stock") == [(10,)]


def test_append_mode_inserts_even_into_a_keyed_table(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
    pgbulk.spark.write(stock(spark, 500, 2), "stock", url=db, mode="append")
    assert rows(db, "SELECT count(*), sum(stock) FROM stock") == [(500, 2 * sum(range(500)))]
    # A key that exists: the server refuses the whole write.
    with pytest.raises(Exception, match="duplicate key value violates unique constraint"):
        pgbulk.spark.write(stock(spark, 10, 9), "stock", url=db, mode="append")
    assert rows(db, "SELECT count(*), sum(stock) FROM stock") == [(500, 2 * sum(range(500)))]
    assert stages(db) == []


def test_explicit_values_in_a_serial_key_advance_its_sequence(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigserial PRIMARY KEY, stock bigint)")
    pgbulk.spark.write(stock(spark, 500, 2), "stock", url=db)
    # The application's next insert takes the next number, not a taken one
    # (the driver's commit advanced the sequence past the rows written).
    assert rows(db, "INSERT INTO stock (stock) VALUES (0) RETURNING pos") == [(500,)]


def test_rows_changing_most_of_a_table_rewrite_it_unless_told_not_to(
    spark: SparkSession, db: str
) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigserial PRIMARY KEY, stock bigint)")
        conn.execute("INSERT INTO stock SELECT g, -1 FROM generate_series(0, 119999) g")
        conn.execute("ANALYZE stock")
    oid = "SELECT 'stock'::regclass::oid::bigint"
    before = rows(db, oid)
    # Every row changed and 10,000 new: a new copy of the table, swapped in.
    pgbulk.spark.write(stock(spark, 130_000, 3), "stock", url=db)
    assert rows(db, "SELECT count(*), sum(stock) FROM stock") == [
        (130_000, 3 * sum(range(130_000)))
    ]
    assert rows(db, oid) != before
    # The serial sequence came along and went past the rows written.
    assert rows(db, "INSERT INTO stock (stock) VALUES (0) RETURNING pos") == [(130_000,)]
    before = rows(db, oid)
    pgbulk.spark.write(stock(spark, 130_000, 5), "stock", url=db, rewrite="false")
    assert rows(db, "SELECT count(*), sum(stock) FROM stock WHERE pos < 130000") == [
        (130_000, 5 * sum(range(130_000)))
    ]
    assert rows(db, oid) == before
    assert stages(db) == []


def test_a_column_the_table_lacks_is_refused_before_any_task(spark: SparkSession, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE stock (pos bigint PRIMARY KEY, stock bigint)")
        conn.execute("INSERT INTO stock VALUES (1, 1)")
    df = stock(spark, 100, 1).withColumn("colour", F.lit("red"))
    with pytest.raises(Exception, match='column "colour" of the data is not a column of'):
        pgbulk.spark.write(df, "stock", url=db)
    assert rows(db, "SELECT * FROM stock") == [(1, 1)]
    assert stages(db) == []
    # A key column the data lacks.
    with pytest.raises(Exception, match="key"):
        pgbulk.spark.write(stock(spark, 10, 1), "stock", url=db, key=["nope"])
    assert rows(db, "SELECT * FROM stock") == [(1, 1)]


def test_an_unknown_option_or_flag_value_fails_before_any_task(
    spark: SparkSession, db: str
) -> None:
    df = stock(spark, 10, 1)
    # A misspelt mode would upsert; a misspelt url would write elsewhere.
    with pytest.raises(Exception, match='unknown option "mdoe" \\(did you mean "mode"\\?\\)'):
        pgbulk.spark.write(df, "stock", url=db, mdoe="append")
    with pytest.raises(Exception, match='option "rewrite" is true or false'):
        pgbulk.spark.write(df, "stock", url=db, rewrite="flase")
    with pytest.raises(Exception, match='option "lock_timeout" is a whole number'):
        pgbulk.spark.write(df, "stock", url=db, lock_timeout="5s")
    assert rows(db, "SELECT count(*) FROM pg_class WHERE relname = 'stock'") == [(0,)]
    assert stages(db) == []
    # ``db`` names the database as pgbulk.write's does.
    pgbulk.spark.write(df, "stock", db=db)
    assert rows(db, "SELECT count(*) FROM stock") == [(10,)]


def test_user_and_password_options_as_the_jdbc_writer_takes_them(
    spark: SparkSession, db: str
) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE ROLE spark_writer LOGIN PASSWORD 'W-pass''1'")
        conn.execute("GRANT CREATE, USAGE ON SCHEMA public TO spark_writer")
    df = stock(spark, 10, 1)
    # TCP (a socket would trust the role): the password is checked.
    ((port, name),) = rows(db, "SELECT current_setting('port'), current_database()")
    url = f"postgresql://127.0.0.1:{port}/{name}?sslmode=disable"
    pgbulk.spark.write(df, "stock", url=url, user="spark_writer", password="W-pass'1")
    assert rows(
        db,
        "SELECT tableowner, (SELECT count(*) FROM stock) FROM pg_tables WHERE tablename = 'stock'",
    ) == [("spark_writer", 10)]
    with pytest.raises(Exception, match="password authentication failed"):
        pgbulk.spark.write(df, "stock", url=url, user="spark_writer", password="wrong")
    with pytest.raises(Exception, match='"batchsize" is one of Spark\'s JDBC writer'):
        pgbulk.spark.write(df, "stock", url=url, batchsize="10000")

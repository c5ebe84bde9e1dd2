"""``df.write.format("pgbulk")`` against Spark's JDBC writer, on one cluster
in one run: ROWS narrow rows (pos, product, day, stock; composite primary
key) from a cached DataFrame on ``local[2]``; prints the median of three
runs of each, and the ratios.

    python bench/python/spark.py [ROWS]      # default 2,000,000

- JDBC append: ``df.write.jdbc`` into the empty table (``batchsize=10000``,
  ``reWriteBatchedInserts=true``), the PostgreSQL JDBC driver from Debian's
  ``libpostgresql-jdbc-java`` (``/usr/share/java/postgresql.jar``).
- pgbulk append: ``mode="append"`` into the empty table.
- pgbulk upsert: into the table holding every key, every value changed;
  compared with the JDBC append (JDBC cannot upsert).

Needs pgbulk installed (``maturin develop --release``), PySpark 4, Java 17
and the JDBC driver; the target is pgbulk's local cluster over TCP.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable

import pgbulk
import pgbulk.spark
import psycopg
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

JAR = "/usr/share/java/postgresql.jar"


def tcp(url: str) -> tuple[str, int, str, str]:
    """Port, database and password of the local cluster behind ``url`` (its
    socket directory is ``<cluster>/run``; the password is in
    ``<cluster>/password``)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    socket_dir = query["host"][0]
    with open(
        os.path.join(os.path.dirname(socket_dir), "password"), encoding="utf-8"
    ) as f:
        password = f.read().strip()
    return (
        "127.0.0.1",
        int(query["port"][0]),
        parts.path.lstrip("/") or "postgres",
        password,
    )


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def frame(spark: SparkSession, rows: int, shift: int) -> DataFrame:
    df = spark.range(rows, numPartitions=2).select(
        (F.col("id") % 5000).alias("pos"),
        (F.col("id") / 5000).cast("long").alias("product"),
        F.date_add(F.lit("2024-01-01").cast("date"), 0).alias("day"),
        ((F.col("id") + shift) % 97).cast("int").alias("stock"),
    )
    df = df.cache()
    df.count()
    return df


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    local = pgbulk.local.start()
    host, port, dbname, password = tcp(local)
    url = f"postgresql://postgres:{urllib.parse.quote(password)}@{host}:{port}/{dbname}"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.jars", JAR)
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    pgbulk.spark.register(spark)
    with psycopg.connect(url, autocommit=True) as conn:
        for t in ("bench_jdbc", "bench_pgbulk"):
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(
                f"CREATE TABLE {t} (pos bigint, product bigint, day date, stock int,"
                " PRIMARY KEY (pos, product, day))"
            )
    first = frame(spark, rows, 0)
    changed = frame(spark, rows, 1)

    def truncate(table: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {table}")
            conn.execute(f"VACUUM ANALYZE {table}")

    def jdbc() -> None:
        first.write.jdbc(
            f"jdbc:postgresql://{host}:{port}/{dbname}",
            "bench_jdbc",
            mode="append",
            properties={
                "user": "postgres",
                "password": password,
                "driver": "org.postgresql.Driver",
                "batchsize": "10000",
                "reWriteBatchedInserts": "true",
            },
        )

    results: dict[str, list[float]] = {"jdbc": [], "append": [], "upsert": []}
    for _ in range(3):
        truncate("bench_jdbc")
        results["jdbc"].append(timed(jdbc))
        truncate("bench_pgbulk")
        results["append"].append(
            timed(
                lambda: pgbulk.spark.write(
                    first, "bench_pgbulk", url=url, mode="append"
                )
            )
        )
        results["upsert"].append(
            timed(lambda: pgbulk.spark.write(changed, "bench_pgbulk", url=url))
        )
        with psycopg.connect(url) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM bench_jdbc), (SELECT count(*) FROM bench_pgbulk)"
            ).fetchone()
        assert counts == (rows, rows), counts
    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"{rows:,} narrow rows from a DataFrame on local[2], median of 3")
    print(f"{'write':<46} {'seconds':>8} {'ratio':>7}  bar")
    print(
        f"{'Spark JDBC append (batchsize 10000, rewritten)':<46} {median['jdbc']:>8.2f}"
    )
    for name, label, bar in (
        ("append", "pgbulk append into the empty table", "<= 0.5x"),
        ("upsert", "pgbulk upsert, every key present, changed", "<= 1.0x"),
    ):
        ratio = median[name] / median["jdbc"]
        print(f"{label:<46} {median[name]:>8.2f} {ratio:>6.2f}x  {bar}")
    spark.stop()


if __name__ == "__main__":
    main()

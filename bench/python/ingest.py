"""pgbulk.ingest against pg-bulk-ingest 0.1.3 on one cluster in one run:
narrow rows from a Python generator of tuples into a table with a composite
primary key, first load and re-upsert of the same (unchanged) rows; each
run into tables of its own, pgbulk and pg-bulk-ingest alternating; prints
the medians of the runs.

    python bench/python/ingest.py [ROWS] [--runs N] [--json]   # 1,000,000 rows, 3 runs
    python bench/python/ingest.py ROWS --pgbulk-only           # pgbulk alone (peak RSS)

With ``--json`` the last line is the result as JSON (``pgbulk-bench all``
reads it when ``PGBULK_BENCH_PYTHON`` names this Python). The peak RSS is
this process's after pgbulk's first run, before pg-bulk-ingest ran in it.

Needs pgbulk installed (maturin develop --release), SQLAlchemy, psycopg and
pg-bulk-ingest==0.1.3 with psycopg2 (``pip install pg-bulk-ingest==0.1.3
psycopg2-binary``); the target is
pgbulk's local cluster (or $PGBULK_BENCH_DB).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pgbulk
import sqlalchemy as sa
from arguments import rows_and_runs


def table(name: str) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    t = sa.Table(
        name,
        metadata,
        sa.Column("pos", sa.Integer, primary_key=True),
        sa.Column("product", sa.BigInteger, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("stock", sa.Integer, nullable=False),
        schema="bench",
    )
    return metadata, t


def batches(t: sa.Table, rows: int) -> Callable[[Any], Iterator[Any]]:
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(100)]

    def rows_of() -> Iterator[tuple[sa.Table, tuple[Any, ...]]]:
        for i in range(rows):
            yield t, (i % 1000, i // 100_000, days[(i // 1000) % 100], i % 97)

    def source(_: Any) -> Iterator[Any]:
        yield None, None, rows_of()

    return source


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    rows, runs = rows_and_runs()
    only = "--pgbulk-only" in sys.argv
    url = os.environ.get("PGBULK_BENCH_DB") or pgbulk.local.start()
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))

    def with_conn(
        ingest: Callable[..., Any], md: sa.MetaData, source: Any
    ) -> Callable[[], Any]:
        def run() -> Any:
            with engine.connect() as conn:
                return ingest(conn, md, source)

        return run

    def first_and_again(ingest: Callable[..., Any], name: str) -> tuple[float, float]:
        md, t = table(name)
        source = batches(t, rows)
        first = timed(with_conn(ingest, md, source))
        again = timed(with_conn(ingest, md, source))
        with engine.connect() as conn:
            counted = conn.execute(
                sa.text(f"SELECT count(*) FROM bench.{name}")
            ).scalar()
        assert counted == rows, (name, counted)
        return first, again

    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    peak_mb = 0.0
    for run in range(runs):
        # Each run into a schema of its own, dropped with the run: no run
        # finds an earlier one's table or watermark.
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS bench CASCADE"))
        ours.append(first_and_again(pgbulk.ingest, "by_pgbulk"))
        if run == 0:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not only:
            import pg_bulk_ingest

            theirs.append(first_and_again(pg_bulk_ingest.ingest, "by_pg_bulk_ingest"))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS bench CASCADE"))
    first = statistics.median(f for f, _ in ours)
    again = statistics.median(a for _, a in ours)
    print(f"rows: {rows:,}, medians of {runs} runs")
    print(f"pgbulk.ingest first load:          {first:7.2f} s")
    print(f"pgbulk.ingest re-upsert unchanged: {again:7.2f} s")
    print(f"peak RSS of this process:          {peak_mb:7.0f} MB")
    if only:
        return
    ref_first = statistics.median(f for f, _ in theirs)
    ref_again = statistics.median(a for _, a in theirs)
    print(f"pg-bulk-ingest first load:          {ref_first:7.2f} s")
    print(f"pg-bulk-ingest re-upsert unchanged: {ref_again:7.2f} s")
    print(f"first load: {ref_first / first:5.1f}x faster (bar: >= 5x)")
    print(f"re-upsert:  {ref_again / again:5.1f}x faster (bar: >= 7x)")
    if "--json" in sys.argv:
        print(
            json.dumps(
                {
                    "first_seconds": first,
                    "again_seconds": again,
                    "reference_first_seconds": ref_first,
                    "reference_again_seconds": ref_again,
                    "peak_rss_mb": peak_mb,
                }
            )
        )


if __name__ == "__main__":
    main()

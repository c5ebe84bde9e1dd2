"""pgbulk.ingest against pg-bulk-ingest 0.1.3 on one cluster in one run:
narrow rows from a Python generator of tuples into a table with a composite
primary key, first load and re-upsert of the same (unchanged) rows.

    python bench/python/ingest.py [ROWS] [--json]          # default 1,000,000
    python bench/python/ingest.py ROWS --pgbulk-only       # pgbulk alone (peak RSS)

Needs pgbulk installed (maturin develop --release), SQLAlchemy, psycopg and
pg-bulk-ingest==0.1.3 (``pip install pg-bulk-ingest==0.1.3``); the target is
pgbulk's local cluster (or $PGBULK_BENCH_DB).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pgbulk
import sqlalchemy as sa


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
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rows = int(args[0]) if args else 1_000_000
    url = os.environ.get("PGBULK_BENCH_DB") or pgbulk.local.start()
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS bench CASCADE"))

    def with_conn(
        ingest: Callable[..., Any], md: sa.MetaData, source: Any
    ) -> Callable[[], Any]:
        def run() -> Any:
            with engine.connect() as conn:
                return ingest(conn, md, source)

        return run

    md, t = table("by_pgbulk")
    source = batches(t, rows)
    first = timed(with_conn(pgbulk.ingest, md, source))
    again = timed(with_conn(pgbulk.ingest, md, source))
    with engine.connect() as conn:
        counted = conn.execute(sa.text("SELECT count(*) FROM bench.by_pgbulk")).scalar()
    assert counted == rows, counted
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows: {rows:,}")
    print(f"pgbulk.ingest first load:          {first:7.2f} s")
    print(f"pgbulk.ingest re-upsert unchanged: {again:7.2f} s")
    print(f"peak RSS of this process:          {peak_mb:7.0f} MB")
    if "--pgbulk-only" in sys.argv:
        return
    import pg_bulk_ingest

    md2, t2 = table("by_pg_bulk_ingest")
    source2 = batches(t2, rows)
    ref_first = timed(with_conn(pg_bulk_ingest.ingest, md2, source2))
    ref_again = timed(with_conn(pg_bulk_ingest.ingest, md2, source2))
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

"""pgbulk.write of a wide pyarrow Table against psql \\copy of the same rows
as CSV, on one cluster in one run (median of the runs, each into a fresh
table after a checkpoint); prints seconds and the ratio.

    python bench/python/write.py [ROWS] [--runs N] [--json]   # 1,000,000 rows, 3 runs

With ``--json`` the last line is the result as JSON (``pgbulk-bench all``
reads it when ``PGBULK_BENCH_PYTHON`` names this Python).

Needs pgbulk installed (maturin develop --release), pyarrow and psql; the
target is pgbulk's local cluster (or $PGBULK_BENCH_DB).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import pgbulk
import pyarrow as pa
import pyarrow.csv as pacsv
from arguments import rows_and_runs

COLUMNS = """id bigint PRIMARY KEY, qty integer, price double precision, amount numeric(12,2),
    name text, city text, ok boolean, day date, at timestamptz, note text"""


def table(rows: int) -> pa.Table:
    ids = pa.array(range(rows), pa.int64())
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "id": ids,
            "qty": pa.array([i % 1000 for i in range(rows)], pa.int32()),
            "price": pa.array([i * 0.25 for i in range(rows)], pa.float64()),
            "amount": pa.array([i * 125 for i in range(rows)], pa.decimal128(12, 2)),
            "name": pa.array([f"customer number {i}" for i in range(rows)]),
            "city": pa.array(
                ["Oslo", "Lima", "Pune", "Kyiv"] * (rows // 4) + ["Oslo"] * (rows % 4)
            ),
            "ok": pa.array([i % 3 == 0 for i in range(rows)]),
            "day": pa.array(
                [dt.date(2024, 1, 1) + dt.timedelta(days=i % 365) for i in range(rows)]
            ),
            "at": pa.array(
                [base + dt.timedelta(seconds=i) for i in range(rows)],
                pa.timestamp("us", tz="UTC"),
            ),
            "note": pa.array(
                [None if i % 5 else "checked" for i in range(rows)], pa.string()
            ),
        }
    )


def fresh(url: str, name: str) -> None:
    """An empty ``name`` of the benchmark's columns, after a checkpoint,
    with the other side's table dropped (its autovacuum would take a core
    from this run)."""
    drop = ", ".join(TABLES)
    psql(
        url,
        "-c",
        f"DROP TABLE IF EXISTS {drop}",
        "-c",
        f"CREATE TABLE {name} ({COLUMNS})",
    )
    psql(url, "-c", "CHECKPOINT")


TABLES = ("bench_copy", "bench_write")


def psql(url: str, *args: str) -> None:
    subprocess.run(["psql", url, "-qX", "-v", "ON_ERROR_STOP=1", *args], check=True)


def main() -> None:
    rows, runs = rows_and_runs()
    url = os.environ.get("PGBULK_BENCH_DB") or pgbulk.local.start()
    data = table(rows)
    copies, writes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wide.csv")
        pacsv.write_csv(data, path)
        for _ in range(runs):
            # Each run into a fresh table, after a checkpoint, so neither
            # side pays for the other's dirty pages.
            fresh(url, "bench_copy")
            start = time.perf_counter()
            psql(
                url, "-c", f"\\copy bench_copy FROM '{path}' WITH (FORMAT csv, HEADER)"
            )
            copies.append(time.perf_counter() - start)
            fresh(url, "bench_write")
            start = time.perf_counter()
            report = pgbulk.write(data, "bench_write", db=url, mode="append")
            writes.append(time.perf_counter() - start)
            assert report.inserted == rows, report
    copy_s, write_s = statistics.median(copies), statistics.median(writes)
    print(f"rows: {rows:,}")
    print(f"psql \\copy (CSV):  {copy_s:6.2f} s")
    print(f"pgbulk.write:      {write_s:6.2f} s")
    print(f"ratio write/copy:  {write_s / copy_s:6.2f}x (bar: <= 0.5x)")
    if "--json" in sys.argv:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = {
            "pgbulk_seconds": write_s,
            "reference_seconds": copy_s,
            "peak_rss_mb": peak_mb,
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()

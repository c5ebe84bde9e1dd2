"""pgbulk as a PySpark data source (importable when PySpark 4 is installed):
upsert from Spark, exactly once whichever task attempts ran.

    import pgbulk.spark
    pgbulk.spark.register(spark)
    (df.write.format("pgbulk")
       .option("url", "postgresql://loader@db/sales")
       .option("table", "sales.stock")
       .option("key", "pos,product,day")
       .mode("append")
       .save())

How a write goes (the library's ``pgbulk::arrow::partitioned``):

1. On the driver, before any task: the table is created from the
   DataFrame's schema when missing (or from the ``schema`` option, which
   also migrates an existing table), the data's columns and key are checked
   against it, and stages of writes into the same schema that began more
   than ``stale_after_seconds`` ago (a crashed driver) are dropped.
2. Each task streams its partition's Arrow record batches into an UNLOGGED
   stage table of its own (binary COPY, one transaction), named by the
   write and the partition, not the attempt. A retried or speculative
   attempt of a partition whose stage is complete leaves it as it is.
3. The driver's commit merges every staged partition in one transaction
   (guarded ``MERGE`` / ``ON CONFLICT``: unchanged rows are not rewritten)
   and drops the stages in it; an abort drops them. Into an empty table,
   or one whose rows mostly change (PostgreSQL 15+, every column written),
   it fills a new copy of the table instead, builds its indexes once the
   rows are in and swaps it in (grants, views and comments kept; the
   table's oid changes); see the README. Like PostgreSQL's own table
   rewrites, such a swap is not MVCC-safe: a ``REPEATABLE READ`` transaction
   whose snapshot predates the commit and that first reads the table after
   it finds it empty. ``.option("rewrite", "false")`` always merges.

Keys across partitions: rows are taken in partition order, each partition
in its own order, and where a key repeats the last such row wins
(``on_duplicate``: ``last``, ``first``, or ``error`` to fail the write
naming a repeated key). The result does not depend on timing.

Options: ``url`` (or ``db``, ``conninfo``, ``dsn``, ``service``: what
``--db`` takes; with none, libpq's ``PG*`` variables; ``user`` and
``password``, as the JDBC writer takes them, override its), ``table`` (required),
``key`` (comma-separated; default the table's primary key), ``mode``
(``upsert``, ``append``, ``replace``, ``replace-atomic``; Spark's
``append`` mode defaults to upsert when there is a key, ``overwrite`` is
``replace-atomic``), ``schema`` (DDL text or a ``.sql`` file),
``on_duplicate``, ``ignore_extra``, ``lock_timeout`` (milliseconds),
``create`` (default true), ``stale_after_seconds`` (default 86400),
``rewrite`` (default true). An option not named here, or a flag that is
neither true nor false, fails the write before any task (a misspelt
``mode`` would otherwise upsert, a misspelt ``url`` write to the ``PG*``
database).
Spark redacts the ``url`` option in plans and its UI; a password is better
kept in ``~/.pgpass``, ``PGPASSWORD`` or a service file than in the URL.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceWriter,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from . import _pgbulk

_log = logging.getLogger("pgbulk.spark")

# Options naming the database, in order of preference.
_DB_OPTIONS = ("url", "db", "conninfo", "dsn")

# Every option the writer reads.
_OPTIONS = frozenset(
    (
        *_DB_OPTIONS,
        "service",
        "user",
        "password",
        "table",
        "dbtable",
        "key",
        "mode",
        "schema",
        "on_duplicate",
        "ignore_extra",
        "lock_timeout",
        "create",
        "stale_after_seconds",
        "rewrite",
        "test_fail_after_staging",
    )
)


# Options of Spark's JDBC writer that have no counterpart here, and why.
_JDBC_ONLY = {
    "batchsize": "each partition goes in one COPY and the write commits once: there are no "
    "batches to size",
    "driver": "pgbulk connects by itself, with no JDBC driver",
    "truncate": 'mode "replace" truncates, "replace-atomic" (Spark\'s overwrite) swaps in a '
    "new table",
    "isolationlevel": "the write commits in one transaction of its own",
}


def _check_names(options: dict[str, str]) -> None:
    """Refuses an option the writer does not read, naming the nearest."""
    unknown = sorted(set(options) - _OPTIONS)
    if not unknown:
        return
    name = unknown[0]
    if name in _JDBC_ONLY:
        raise ValueError(
            f'pgbulk: option "{name}" is one of Spark\'s JDBC writer: {_JDBC_ONLY[name]}'
        )
    near = difflib.get_close_matches(name, sorted(_OPTIONS), n=1)
    hint = f' (did you mean "{near[0]}"?)' if near else ""
    raise ValueError(
        f'pgbulk: unknown option "{name}"{hint}; the options are: {", ".join(sorted(_OPTIONS))}'
    )


def _flag(options: dict[str, str], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    spelled = value.strip().lower()
    if spelled in ("1", "true", "yes", "on"):
        return True
    if spelled in ("0", "false", "no", "off"):
        return False
    raise ValueError(f'pgbulk: option "{name}" is true or false, not {value!r}')


def _int(options: dict[str, str], name: str) -> int | None:
    value = options.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'pgbulk: option "{name}" is a whole number, not {value!r}') from None


def _db(options: dict[str, str]) -> str | None:
    db = next((options[name] for name in _DB_OPTIONS if options.get(name)), None)
    if db is None and options.get("service"):
        db = f"service={_quoted(options['service'])}"
    given = {k: options[k] for k in ("user", "password") if options.get(k)}
    if not given:
        return db
    if db is not None and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", db):
        # Query parameters come after the URI's user and password: they win.
        return db + ("&" if "?" in db else "?") + urllib.parse.urlencode(given)
    if db is not None and "=" not in db:
        db = f"dbname={_quoted(db)}"
    words = " ".join(f"{k}={_quoted(v)}" for k, v in given.items())
    return f"{db} {words}" if db else words


def _quoted(value: str) -> str:
    """``value`` as a ``key=value`` connection string's quoted value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _schema_ddl(value: str | None) -> str | None:
    if value is None:
        return None
    if value.rstrip().lower().endswith(".sql") and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


@dataclasses.dataclass(frozen=True)
class StagedPartition(WriterCommitMessage):
    """A task's commit message: its partition is staged."""

    partition: int
    rows: int
    reused: bool


class PgbulkWriter(DataSourceArrowWriter):
    """The writer of one ``df.write.format("pgbulk")``: created on the
    driver (which begins the write), pickled to the tasks."""

    def __init__(self, options: dict[str, str], schema: StructType, overwrite: bool) -> None:
        options = {k.lower(): v for k, v in options.items()}
        _check_names(options)
        table = options.get("table") or options.get("dbtable")
        if not table:
            raise ValueError('pgbulk: .option("table", "[schema.]table") is required')
        self.table = table
        self.db = _db(options)
        key = options.get("key")
        self.key = [k.strip() for k in key.split(",") if k.strip()] if key else None
        self.mode = "replace-atomic" if overwrite else options.get("mode")
        self.schema_ddl = _schema_ddl(options.get("schema"))
        self.on_duplicate = options.get("on_duplicate")
        self.ignore_extra = _flag(options, "ignore_extra", False)
        self.lock_timeout_ms = _int(options, "lock_timeout")
        stale = _int(options, "stale_after_seconds")
        self.rewrite = _flag(options, "rewrite", True)
        self.fail_after_staging = _flag(options, "test_fail_after_staging", False)
        # Spark timestamps are instants; their zone only labels them.
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")
        begun = _pgbulk.partitioned_begin(
            self.arrow_schema.empty_table(),
            self.table,
            **self._settings(),
            create=_flag(options, "create", True),
            stale_after_seconds=86400 if stale is None else stale,
        )
        self.write_id: str = begun["write_id"]
        self.created_ddl: str | None = begun["created_ddl"]

    def _settings(self) -> dict[str, Any]:
        """What the driver's begin and commit both pass."""
        return {
            "db": self.db,
            "mode_name": self.mode,
            "key": self.key,
            "schema_ddl": self.schema_ddl,
            "on_duplicate": self.on_duplicate,
            "ignore_extra": self.ignore_extra,
            "lock_timeout_ms": self.lock_timeout_ms,
        }

    def write(self, iterator: Iterator[pa.RecordBatch]) -> StagedPartition:
        context = TaskContext.get()
        if context is None:
            raise RuntimeError("pgbulk: write() runs in a Spark task")
        first = next(iterator, None)
        schema = first.schema if first is not None else self.arrow_schema
        batches = itertools.chain([first] if first is not None else [], iterator)
        staged = _pgbulk.partitioned_stage(
            pa.RecordBatchReader.from_batches(schema, batches),
            self.table,
            self.write_id,
            context.partitionId(),
            db=self.db,
            ignore_extra=self.ignore_extra,
            lock_timeout_ms=self.lock_timeout_ms,
        )
        if self.fail_after_staging and context.attemptNumber() == 0:
            raise RuntimeError("pgbulk: failing the first attempt after staging (test option)")
        return StagedPartition(context.partitionId(), staged["rows"], staged["reused"])

    def commit(self, messages: Sequence[WriterCommitMessage | None]) -> None:
        partitions = [m.partition for m in messages if isinstance(m, StagedPartition)]
        report = _pgbulk.partitioned_commit(
            self.arrow_schema.empty_table(),
            self.table,
            self.write_id,
            partitions,
            **self._settings(),
            rewrite=self.rewrite,
        )
        _log.info(
            "%s: %d partitions merged: %d inserted, %d updated, %d unchanged, "
            "%d deleted, %d repeated",
            self.table,
            len(partitions),
            report["inserted"],
            report["updated"],
            report["unchanged"],
            report["deleted"],
            report["repeated"],
        )
        for change in report["migrations"]:
            _log.info("%s", change)
        for note in report["notes"]:
            _log.info("%s: %s", self.table, note)

    def abort(self, messages: Sequence[WriterCommitMessage | None]) -> None:
        _pgbulk.partitioned_abort(self.table, self.write_id, db=self.db)


class PgbulkDataSource(DataSource):
    """The data source ``pgbulk`` (writes only)."""

    @classmethod
    def name(cls) -> str:
        return "pgbulk"

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceWriter:
        return PgbulkWriter(dict(self.options), schema, overwrite)


# Sessions the data source is registered with (registering again while
# another thread writes makes Spark lose it for a moment).
_registered: set[int] = set()
_registering = threading.Lock()


def register(spark: SparkSession | None = None) -> None:
    """Registers the data source ``pgbulk`` with ``spark`` (default: the
    active session), once per session."""
    session = spark or SparkSession.getActiveSession()
    if session is None:
        raise RuntimeError("pgbulk.spark.register: no active SparkSession")
    with _registering:
        if id(session) not in _registered:
            session.dataSource.register(PgbulkDataSource)
            _registered.add(id(session))


def write(
    df: DataFrame,
    table: str,
    *,
    url: str | None = None,
    key: Sequence[str] | None = None,
    mode: str | None = None,
    **options: Any,
) -> None:
    """``df.write.format("pgbulk")`` with these options, then ``save()``:
    ``mode`` is one of pgbulk's (``upsert``, ``append``, ``replace``,
    ``replace-atomic``) or Spark's ``overwrite``. Other keyword arguments
    are options as the data source takes them."""
    register(df.sparkSession)
    # Spark finds Python data sources through the thread's active session:
    # a write from another thread than the session's would not find it.
    jvm = getattr(df.sparkSession, "_jvm", None)
    if jvm is not None:
        jvm.org.apache.spark.sql.SparkSession.setActiveSession(df.sparkSession._jsparkSession)
    writer = df.write.format("pgbulk").option("table", table)
    if url is not None:
        writer = writer.option("url", url)
    if key is not None:
        writer = writer.option("key", ",".join(key))
    if mode == "overwrite":
        writer = writer.mode("overwrite")
    else:
        writer = writer.mode("append")
        if mode is not None:
            writer = writer.option("mode", mode)
    for name, value in options.items():
        writer = writer.option(name, str(value))
    writer.save()

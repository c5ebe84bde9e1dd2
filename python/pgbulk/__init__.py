"""pgbulk: move data into PostgreSQL in bulk, from Python.

The same library as the ``pgbulk`` command, run in-process with the GIL
released: ``load_csv`` is ``pgbulk load``, ``sync`` is ``pgbulk sync``.
Connections (``db=``, ``source``) take what ``--db`` takes: a URI, a
``key=value`` string, ``service=NAME`` or a database name, resolved with
libpq's rules (``PG*`` variables, ``~/.pgpass``, ``pg_service.conf``);
with nothing configured, pgbulk's own local cluster (see ``pgbulk.local``).
They also take a connection the caller holds (psycopg 3, psycopg2, a
SQLAlchemy connection or engine): pgbulk opens its own connections with
its parameters and password.
Failures raise the exceptions of ``pgbulk.errors``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeVar

from . import _pgbulk, errors, local
from .connections import conninfo
from .declared import (
    Delete,
    HighWatermark,
    IngestReport,
    Mode,
    TableCounts,
    Upsert,
    Visibility,
    ingest,
)
from .errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    DataError,
    Error,
    IOError,
    LocalError,
    ServerError,
)
from .frames import as_arrow

__version__: str = _pgbulk.__version__

LoadMode = Literal["upsert", "append", "replace", "replace-atomic"]


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a load did (the summary ``pgbulk load`` prints)."""

    rows_read: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    repeated: int
    rejected: int
    batches: int
    seconds: float
    created_ddl: str | None = None
    resumed_after_rows: int | None = None
    nothing_to_load: str | None = None
    already_loaded: bool = False
    skipped: list[str] = dataclasses.field(default_factory=list)
    plan: list[str] = dataclasses.field(default_factory=list)
    migrations: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class SyncReport(LoadReport):
    """What a sync did: the load of the rows read, and what was read."""

    mapping: list[str] = dataclasses.field(default_factory=list)
    ranges: int | None = None
    watermark_from: str | None = None
    watermark_next: str | None = None


@dataclasses.dataclass(frozen=True)
class TableExport:
    """What the export of one table did."""

    source: str
    table: str
    rows: int
    file: str | None = None
    bytes: int = 0
    merged: int | None = None
    inserted: int | None = None
    updated: int | None = None
    watermark_from: str | None = None
    watermark_next: str | None = None
    mapping: list[str] = dataclasses.field(default_factory=list)
    plan: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export did: the tables exported, and those that failed
    (their exceptions, by source table)."""

    tables: list[TableExport]
    failed: dict[str, BaseException] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PlanStep:
    """One step of a migration plan."""

    table: str
    summary: str
    sql: list[str]
    lock: str
    rewrites: bool
    hazards: list[str]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What bringing the database to a declared schema would take."""

    steps: list[PlanStep]
    text: str

    def __str__(self) -> str:
        return self.text


def _paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


_R = TypeVar("_R", LoadReport, SyncReport, TableExport)


def _report(cls: type[_R], fields: dict[str, Any]) -> _R:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in names})


def load_csv(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    table: str,
    *,
    db: str | object | None = None,
    mode: LoadMode | None = None,
    key: Sequence[str] | None = None,
    schema: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    null: str | None = None,
    encoding: str | None = None,
    batch_rows: int | None = None,
    max_errors: int = 0,
    reject_file: str | os.PathLike[str] | None = None,
    restart: bool = False,
    single_transaction: bool = False,
    ignore_extra: bool = False,
    streams: int | None = None,
    retries: int = 0,
    dry_run: bool = False,
    format: Literal["csv", "text"] | None = None,
    quote: str | None = None,
    escape: str | None = None,
    skip_lines: int = 0,
    columns: Sequence[str] | None = None,
    types: Mapping[str, str] | None = None,
    sample_rows: int | None = None,
    sample_all: bool = False,
) -> LoadReport:
    """Load CSV files (``"-"``: standard input) into ``table``, as ``pgbulk load``.

    ``format="text"`` reads PostgreSQL's text format, as ``COPY ... TO``
    and ``psql \\copy ... to`` write it (tab-separated, ``\\N`` for NULL,
    backslash escapes); by default a tab-separated file with ``\\N``
    fields is read so (unless ``null`` is given), any other as CSV; an
    unquoted ``\\N`` field in a file read so as CSV raises ``DataError``
    (PostgreSQL's text format, or MySQL's NULL): ``null="\\N"`` or
    ``format="csv"`` says which is meant.
    ``header`` says whether the first line is a header: by default it is
    in CSV, and in the text format only when it looks like one (names
    above typed values), as ``COPY ... TO`` writes none unless asked.

    Parquet files (named ``*.parquet``) load too, their types taken from the
    file's schema; the CSV options do not apply to them.

    The table is created from ``schema`` (DDL text) or from types inferred
    from the files when it does not exist, migrated to ``schema`` when
    given. ``mode`` defaults to upsert when the table has a key (``key``
    names other columns), else append. Each batch of ``batch_rows`` rows
    commits with the files' position: calling again after an interruption
    continues after the last committed batch (``restart`` loads from the
    start). A bad row raises ``DataError`` naming file, line, column and
    value, or with ``max_errors`` goes to ``reject_file``. Several files
    load each once (a file loaded before, even renamed, is skipped: see
    ``skipped``), in order, or ``streams`` (default 2) at a time when they
    are appended to a table without a key; a quoted glob is expanded. ``dry_run``
    changes nothing and says in ``plan`` what would be created, migrated,
    loaded, continued or skipped.

    The other arguments are ``pgbulk load``'s flags of the same names
    (messages name the flags: ``--type zip=text`` is ``types={"zip":
    "text"}``): ``quote`` and ``escape`` characters (default ``"``, and the
    quote doubled); ``skip_lines`` lines before the header; ``columns``
    name the fields (headerless files, or instead of the header);
    ``types`` override inferred column types of a table pgbulk creates;
    ``sample_rows`` infers from the first N rows, ``sample_all`` from
    every row (default: 1 MiB from the start, middle and end of a file).
    """
    return _report(
        LoadReport,
        _pgbulk.load_csv(
            _paths(paths),
            table,
            db=conninfo(db),
            mode_name=mode,
            key=list(key) if key is not None else None,
            schema_ddl=schema,
            delimiter=delimiter,
            header=header,
            null=null,
            encoding=encoding,
            batch_rows=batch_rows,
            max_errors=max_errors,
            reject_file=os.fspath(reject_file) if reject_file is not None else None,
            restart=restart,
            single_transaction=single_transaction,
            ignore_extra=ignore_extra,
            streams=streams,
            retries=retries,
            dry_run=dry_run,
            input_format=format,
            quote=quote,
            escape=escape,
            skip_lines=skip_lines,
            columns=list(columns) if columns is not None else None,
            types=list(types.items()) if types is not None else None,
            sample_rows=sample_rows,
            sample_all=sample_all,
        ),
    )


def write(
    data: object,
    table: str,
    *,
    db: str | object | None = None,
    conn: object | None = None,
    dsn: str | None = None,
    mode: LoadMode | None = None,
    key: Sequence[str] | None = None,
    schema: str | None = None,
    create: bool = True,
    batch_rows: int | None = None,
    single_transaction: bool = False,
    ignore_extra: bool = False,
    streams: int | None = None,
    rewrite: bool = True,
) -> LoadReport:
    """Write Arrow data into ``table``: a pyarrow Table or RecordBatchReader,
    a polars DataFrame, a pandas DataFrame (pandas 2.2 or later), or any
    object with ``__arrow_c_stream__`` / ``__arrow_c_array__``.

    The record batches are read in Rust through the Arrow C stream
    interface (no copy in Python, the GIL released). Columns are matched to
    the table's by name (``ignore_extra`` leaves out those it lacks;
    missing ones take their defaults); a missing table is created from the
    Arrow schema (the mapping is in the README; ``key`` becomes its primary
    key) unless ``create`` is false, or from ``schema`` (DDL text), which
    also migrates an existing one. ``mode`` defaults to upsert when the
    table has a key, else append. Each ``batch_rows`` rows commit
    (``single_transaction``: all at once). Appending into a table that is
    there as declared, the rows go on ``streams`` connections at once
    (default 2; 1 keeps them in order), each committing batches of its
    own; after a failure the others stop, their batches in flight rolled
    back. An upsert batch of 100,000 rows or more that changes most of
    the table's rows (PostgreSQL 15+) rewrites it as a new copy swapped in
    (its oid changes; see the README on MVCC) unless ``rewrite=False``.
    ``db``, ``conn`` and ``dsn`` are alternative names for the target.
    From a pandas DataFrame an unnamed index is left out (a named one is
    written as columns of its names), a column of dicts goes as JSON,
    each dict as ``json.dumps`` writes it (pyarrow would make a struct of
    every key, null where a row lacks one), and a column of Decimals goes
    as each value's text into ``numeric`` (pyarrow would give all the
    largest scale and the precision seen). Into ``json``/``jsonb`` columns
    lists, structs and booleans go as JSON. Timestamps with a zone into a
    ``timestamp``, ``date`` or ``time`` column are stored by their wall
    time in the session's TimeZone, which must be UTC (else
    ``ConfigError``, nothing written). A column of pandas Periods (and any
    extension type holding integers that stand for values) is refused.
    """
    target = next((t for t in (db, conn, dsn) if t is not None), None)
    return _report(
        LoadReport,
        _pgbulk.write(
            as_arrow(data),
            table,
            db=conninfo(target),
            mode_name=mode,
            key=list(key) if key is not None else None,
            schema_ddl=schema,
            create=create,
            batch_rows=batch_rows,
            single_transaction=single_transaction,
            ignore_extra=ignore_extra,
            streams=streams,
            rewrite=rewrite,
        ),
    )


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    """One row of pgbulk's ledger (``pgbulk_watermark``) for a table."""

    part: str
    """The key after ``<table>#``: ``""`` (the table's watermark),
    ``last-run``, ``load:<fingerprint>``, ``sync:<source>...``."""
    high_watermark: Any
    metadata: Any
    resume: Any
    updated_at: str


@dataclasses.dataclass(frozen=True)
class Status:
    """What the ledger in the target says of a table (``pgbulk status``)."""

    table: str
    lines: list[str]
    """The sentences ``pgbulk status --table`` prints."""
    rows: list[LedgerRow]


def status(table: str, *, db: str | object | None = None) -> Status:
    """The last run's counts, the files loaded and when, pending resumes
    and stored watermarks of ``table``, read from the ledger in ``db``."""
    found = _pgbulk.status(table, db=conninfo(db))
    return Status(
        table=found.get("table", table),
        lines=found.get("lines", []),
        rows=[LedgerRow(**json.loads(r)) for r in found.get("rows", [])],
    )


def sync(
    source: str | object,
    *,
    table: str | None = None,
    query: str | None = None,
    db: str | object | None = None,
    to: str | None = None,
    where: str | None = None,
    mode: LoadMode | None = None,
    key: Sequence[str] | None = None,
    incremental: str | None = None,
    lookback: timedelta | None = None,
    jobs: int = 1,
    delete_missing: bool = False,
    ignore_extra: bool = False,
    batch_rows: int | None = None,
    dry_run: bool = False,
    schema: str | None = None,
) -> SyncReport:
    """Copy ``table`` (or the rows of ``query``) of the ``source`` database
    into ``db``, as ``pgbulk sync``.

    Columns are matched by name; safe type differences are cast, anything
    else raises ``DataError`` before a row is written. ``incremental`` reads
    only rows at or after the stored watermark of that column, never missing
    a row a transaction still open commits later; ``delete_missing`` deletes
    destination rows (within ``where``) whose key was not read; ``jobs``
    reads that many ranges at once from one snapshot; ``schema`` (DDL text)
    declares the destination, created or migrated before the rows load.
    """
    return _report(
        SyncReport,
        _pgbulk.sync(
            conninfo(source) or "",
            table_name=table,
            query=query,
            db=conninfo(db),
            to=to,
            where_sql=where,
            mode_name=mode,
            key=list(key) if key is not None else None,
            incremental=incremental,
            lookback_seconds=lookback.total_seconds() if lookback is not None else None,
            jobs=jobs,
            delete_missing=delete_missing,
            ignore_extra=ignore_extra,
            batch_rows=batch_rows,
            dry_run=dry_run,
            schema_ddl=schema,
        ),
    )


ArrayNulls = Literal["keep", "drop", "refuse"]


def export(
    tables: str | Sequence[str],
    to: str,
    *,
    source: str | object | None = None,
    query: str | None = None,
    to_table: str | None = None,
    key: Sequence[str] | None = None,
    where: str | None = None,
    incremental: str | None = None,
    lookback: timedelta | None = None,
    array_nulls: ArrayNulls | None = None,
    bigquery_endpoint: str | None = None,
    dry_run: bool = False,
) -> ExportReport:
    """Export ``tables`` of the ``source`` database (as ``db`` elsewhere:
    nothing given is the usual default) to ``to``, as ``pgbulk export``:
    ``"parquet://DIR"`` or ``"bigquery://PROJECT/DATASET"``.

    Each table is its own unit. When some fail, the others are still
    exported and the first failure is raised with the whole
    :class:`ExportReport` as its ``report`` attribute. ``incremental``
    exports only rows at or after the last run's watermark of that column;
    ``key`` is what BigQuery's MERGE matches on (default: the primary key);
    ``bigquery_endpoint`` (default ``$BIGQUERY_EMULATOR_HOST``) talks to an
    emulator without credentials. ``query`` (a ``SELECT``) instead of
    tables (pass ``[]``) exports its rows into ``to_table``.
    """
    names = [tables] if isinstance(tables, str) else list(tables)
    outcomes = _pgbulk.export(
        conninfo(source),
        names,
        to,
        query=query,
        to_table=to_table,
        key=list(key) if key is not None else None,
        where_sql=where,
        incremental=incremental,
        lookback_seconds=lookback.total_seconds() if lookback is not None else None,
        array_nulls=array_nulls,
        bigquery_endpoint=bigquery_endpoint or os.environ.get("BIGQUERY_EMULATOR_HOST") or None,
        dry_run=dry_run,
    )
    done: list[TableExport] = []
    failed: dict[str, BaseException] = {}
    for name, outcome in outcomes:
        if isinstance(outcome, BaseException):
            failed[name] = outcome
        else:
            done.append(_report(TableExport, outcome))
    report = ExportReport(tables=done, failed=failed)
    if failed:
        first = next(iter(failed.values()))
        first.report = report  # type: ignore[attr-defined]
        raise first
    return report


def plan(schema: str, *, db: str | object | None = None) -> Plan:
    """The steps (statements, locks, rewrites, hazards) that would bring
    the database to ``schema`` (DDL text), as ``pgbulk plan``; nothing is
    changed."""
    raw = _pgbulk.plan(schema, db=conninfo(db))
    return Plan(steps=[PlanStep(**s) for s in raw["steps"]], text=raw["text"])


__all__ = [
    "AuthError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "DataError",
    "Delete",
    "Error",
    "ExportReport",
    "HighWatermark",
    "IOError",
    "IngestReport",
    "LoadMode",
    "LoadReport",
    "LocalError",
    "Mode",
    "Plan",
    "PlanStep",
    "LedgerRow",
    "ServerError",
    "Status",
    "SyncReport",
    "TableCounts",
    "TableExport",
    "Upsert",
    "Visibility",
    "errors",
    "export",
    "ingest",
    "load_csv",
    "local",
    "plan",
    "status",
    "sync",
    "write",
]

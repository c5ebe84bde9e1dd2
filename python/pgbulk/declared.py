"""Batches of rows into SQLAlchemy-declared tables: pg-bulk-ingest's
``ingest(conn, metadata, batches, ...)`` on pgbulk's engine.

Changing ``from pg_bulk_ingest import ...`` to ``from pgbulk import ...``
is all a pg-bulk-ingest user does. The tables of ``metadata`` are compiled
to PostgreSQL DDL (``CreateTable``, ``CreateIndex``, comments) and handed
to the library, which creates, migrates, stages with binary COPY and
upserts as ``pgbulk load`` does, each batch committed with its high
watermark. See the README's compatibility section for what differs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from . import _pgbulk
from .connections import conninfo
from .errors import ConfigError


class Upsert:
    """Whether tables with a primary key are upserted."""

    OFF = "__OFF__"
    IF_PRIMARY_KEY = "__IF_PRIMARY_KEY__"


class Delete:
    """Whether existing rows are deleted."""

    OFF = "__OFF__"
    BEFORE_FIRST_BATCH = "__BEFORE_FIRST_BATCH__"


class HighWatermark:
    """Where ``batches`` starts: the stored high watermark, or none."""

    LATEST = "__LATEST__"
    EARLIEST = "__EARLIEST__"


class Visibility:
    """When the batches' rows become visible to other sessions."""

    AFTER_EACH_BATCH = "__AFTER_EACH_BATCH__"


class Mode:
    """pg-bulk-ingest's ``ingest_mode`` (overrides ``upsert`` and ``delete``)."""

    UPSERT_COMMITTING_EACH_BATCH = "__UPSERT_COMMITTING_EACH_BATCH__"
    DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH = (
        "__DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH__"
    )
    # Visible only after the final batch: a new table filled by every batch
    # and swapped in (grants, views and comments kept).
    DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH = (
        "__DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH__"
    )


_MODES = {
    Mode.UPSERT_COMMITTING_EACH_BATCH: "upsert",
    Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH: "delete-then-upsert",
    Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH: "replace-atomic",
}


@dataclasses.dataclass(frozen=True)
class TableCounts:
    """What the batches did to one table."""

    inserted: int
    updated: int
    unchanged: int
    deleted: int
    repeated: int


@dataclasses.dataclass(frozen=True)
class IngestReport:
    """What an ingest did (pg-bulk-ingest's ``ingest`` returns nothing)."""

    batches: int
    tables: dict[str, TableCounts]
    skipped: dict[str, int]
    migrations: list[str]
    seconds: float


def _ddl(metadata: Any) -> str:
    """The tables of ``metadata`` as PostgreSQL DDL, in declaration order.

    An integer primary key stays an integer (SQLAlchemy would make it
    SERIAL); foreign keys are left out (the library declares tables
    one by one). The enum and domain types the columns use (as
    ``create_all`` creates them) come first: the library creates those
    the database lacks and uses those it has as they are.
    """
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable, SetColumnComment, SetTableComment

    # A named paramstyle: with psycopg's pyformat, % in identifiers would
    # be doubled for a driver that never sees this DDL.
    dialect = postgresql.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
    from sqlalchemy.dialects.postgresql.named_types import CreateDomainType, CreateEnumType

    statements = []
    types_declared: set[tuple[str | None, str]] = set()
    for table in metadata.tables.values():
        copy = table.to_metadata(sa.MetaData())
        for column in copy.columns:
            column.autoincrement = False
            # The copy puts an enum of no schema in the table's schema;
            # create_all on the declared table uses the enum as declared.
            declared_type = table.columns[column.key].type
            if isinstance(declared_type, sa.types.SchemaType):
                column.type = declared_type
            named = column.type
            if isinstance(named, sa.ARRAY):
                named = named.item_type
            if isinstance(named, postgresql.DOMAIN):
                create_type: Any = CreateDomainType(named)
            elif isinstance(named, sa.Enum) and named.native_enum and named.name:
                create_type = CreateEnumType(named)
            else:
                continue
            type_name = (named.schema, str(named.name))
            if type_name not in types_declared:
                types_declared.add(type_name)
                statements.append(str(create_type.compile(dialect=dialect)).strip())
        create = CreateTable(copy, include_foreign_key_constraints=[])
        statements.append(str(create.compile(dialect=dialect)).strip())
        # Unnamed indexes on the same first column get the same name from
        # SQLAlchemy's convention; pgbulk compares indexes by definition,
        # so a repeated name gets a number.
        used: set[str] = set()
        for index in copy.indexes:
            ddl = str(CreateIndex(index).compile(dialect=dialect)).strip()
            name = index.name if isinstance(index.name, str) else None
            if name is not None:
                quoted = dialect.identifier_preparer.quote(name)
                n = 1
                while name in used:
                    n += 1
                    name = f"{index.name}_{n}"
                if name != index.name:
                    ddl = ddl.replace(quoted, dialect.identifier_preparer.quote(name), 1)
                used.add(name)
            statements.append(ddl)
        if copy.comment is not None:
            statements.append(str(SetTableComment(copy).compile(dialect=dialect)).strip())
        for column in copy.columns:
            if column.comment is not None:
                statements.append(str(SetColumnComment(column).compile(dialect=dialect)).strip())
    return ";\n".join(statements) + ";\n"


def _column_class(column_type: Any, sa: Any) -> str:
    """What the declared type asks of a row's value: ``"json"`` (serialised
    with ``json.dumps``), ``"integer"`` (a whole-number ``Decimal`` or float
    is taken, one with a fraction refused), ``"bytes"`` (bytes or their text
    form only) or ``""``."""
    if isinstance(column_type, sa.TypeDecorator):
        column_type = column_type.impl_instance
    if isinstance(column_type, sa.JSON):
        return "json"
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.LargeBinary):
        return "bytes"
    return ""


def _enum_labels(column_type: Any, sa: Any) -> dict[Any, str] | None:
    """For an ``sa.Enum(EnumClass)`` column, the label SQLAlchemy stores for
    each member of the Python enum: its name, or what ``values_callable``
    gives (an alias stores its canonical member's first name)."""
    if not isinstance(column_type, sa.Enum) or column_type.enum_class is None:
        return None
    members = column_type.enum_class.__members__
    if getattr(column_type, "_omit_aliases", True):
        members = {n: m for n, m in members.items() if m.name == n}
    objects = list(members.values())
    # As SQLAlchemy's own lookup pairs them.
    return dict(zip(reversed(objects), reversed(column_type.enums), strict=False))


def ingest(
    conn: Any,
    metadata: Any,
    batches: Callable[[Any], Iterable[tuple[Any, Any, Iterable[tuple[Any, tuple[Any, ...]]]]]],
    high_watermark: Any = HighWatermark.LATEST,
    visibility: str = Visibility.AFTER_EACH_BATCH,
    upsert: str = Upsert.IF_PRIMARY_KEY,
    delete: str = Delete.OFF,
    ingest_mode: str | None = None,
    get_pg_force_execute: Any = None,
    on_before_visible: Callable[[Any, Any, Any], None] | None = None,
    logger: logging.Logger | None = None,
    max_rows_per_table_buffer: int = 10000,
    lock_timeout: float | None = None,
    rewrite: bool = True,
) -> IngestReport:
    """Ingests ``batches(high_watermark)`` into the tables of ``metadata``.

    ``batches`` is called once with the starting high watermark (the stored
    one for ``HighWatermark.LATEST``, ``None`` for ``EARLIEST``, else the
    value given) and yields ``(high_watermark, batch_metadata, rows)``; each
    row is ``(table, values)`` with ``table`` one of ``metadata``'s tables
    (rows for others are skipped) and ``values`` in its columns' order.
    ``high_watermark`` may be a function, called just before the batch
    commits. Each batch commits in one transaction together with its high
    watermark; missing schemas and tables are created in the first batch's
    transaction (or at the end when no batch comes), and a table whose
    declaration changed is migrated before its first batch (lock-light:
    ``lock_timeout`` seconds per attempt, default 5, retried with backoff).

    Tables with a primary key are upserted (the last row of a batch per key
    wins; unchanged rows are not rewritten) unless ``upsert=Upsert.OFF``.
    ``delete=Delete.BEFORE_FIRST_BATCH`` deletes the existing rows in the
    first batch's transaction (zero batches delete nothing).
    A batch of 100,000 rows or more whose rows change most of a table's
    rows (PostgreSQL 15+) rewrites it instead: a new copy with the batch's
    rows laid over the table's, indexed and swapped in within the batch's
    transaction (grants, views and the rest kept; its oid changes; see the
    README on MVCC), unless ``rewrite=False``.

    ``conn`` is a SQLAlchemy connection (psycopg 3 or psycopg2) with no
    transaction in progress: pgbulk opens its own session with its
    parameters and password and leaves ``conn`` as it was.
    ``get_pg_force_execute`` and ``max_rows_per_table_buffer`` are accepted
    and not needed: pgbulk never waits on a lock without ``lock_timeout``,
    and stages each table's rows separately however they interleave.

    ``on_before_visible(conn, table, batch_metadata)`` is called for each
    table inside each batch's transaction, after its rows and watermark
    are written and before it commits, with a SQLAlchemy connection (same
    driver as ``conn``) into that transaction: it sees the batch's rows
    while other sessions do not, and what it writes commits with the batch.
    Its ``commit()``/``rollback()`` leave the batch's transaction alone; an
    exception (or a failed statement) rolls the batch back.

    An exception raised by ``batches``, its rows or a high watermark
    function is raised again after the batch in flight rolled back; the
    batches before it stay committed. Failures of pgbulk raise
    ``pgbulk.errors`` exceptions.
    """
    del get_pg_force_execute, max_rows_per_table_buffer
    log = logger if logger is not None else logging.getLogger("pgbulk")
    if visibility != Visibility.AFTER_EACH_BATCH:
        raise ConfigError(f"visibility {visibility!r}: only Visibility.AFTER_EACH_BATCH")
    if ingest_mode is not None:
        if ingest_mode not in _MODES:
            raise ConfigError(f"ingest_mode {ingest_mode!r}: one of pgbulk.Mode's members")
        mode_name, do_upsert = _MODES[ingest_mode], True
    else:
        if upsert not in (Upsert.OFF, Upsert.IF_PRIMARY_KEY):
            raise ConfigError(f"upsert {upsert!r}: Upsert.OFF or Upsert.IF_PRIMARY_KEY")
        if delete not in (Delete.OFF, Delete.BEFORE_FIRST_BATCH):
            raise ConfigError(f"delete {delete!r}: Delete.OFF or Delete.BEFORE_FIRST_BATCH")
        mode_name = "upsert" if delete == Delete.OFF else "delete-then-upsert"
        do_upsert = upsert == Upsert.IF_PRIMARY_KEY
    if high_watermark == HighWatermark.LATEST:
        start, start_value = "latest", None
    elif high_watermark == HighWatermark.EARLIEST:
        start, start_value = "earliest", None
    else:
        start, start_value = "value", json.dumps(high_watermark)
    in_transaction = getattr(conn, "in_transaction", None)
    if callable(in_transaction) and in_transaction():
        raise ConfigError(
            "conn has a transaction in progress: commit or roll it back before ingest"
            " (pgbulk loads on its own session, which would wait on its locks)"
        )
    tables = list(metadata.tables.values())
    if not tables:
        raise ConfigError("metadata declares no table")
    import sqlalchemy as sa

    lookup = {table: i for i, table in enumerate(tables)}
    names = [(table.schema, table.name) for table in tables]
    classes = [[_column_class(c.type, sa) for c in table.columns] for table in tables]
    labels = [[_enum_labels(c.type, sa) for c in table.columns] for table in tables]

    def source(start_json: str | None) -> Iterable[Any]:
        return batches(None if start_json is None else json.loads(start_json))

    before_visible = None
    if on_before_visible is not None:
        hook = on_before_visible
        drivername = conn.engine.url.drivername
        connect_args: dict[str, Any] = {}
        if conn.engine.url.get_driver_name() == "psycopg":
            # No server-side prepared statements: they would outlive the
            # hook in pgbulk's session.
            connect_args["prepare_threshold"] = None

        def before_visible(socket_dir: str, port: int, batch_metadata: Any) -> None:
            url = sa.URL.create(
                drivername,
                username=conn.engine.url.username or "pgbulk",
                database=conn.engine.url.database or "pgbulk",
                query={"host": socket_dir, "port": str(port)},
            )
            side = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
            try:
                with side.connect() as side_conn:
                    for table in tables:
                        hook(side_conn, table, batch_metadata)
            finally:
                side.dispose()

    def committed(number: int, counts: dict[str, dict[str, int]]) -> None:
        for table, c in counts.items():
            log.info(
                "Batch %s committed into %s: %s inserted, %s updated, %s unchanged, %s deleted",
                number,
                table,
                c["inserted"],
                c["updated"],
                c["unchanged"],
                c["deleted"],
            )

    report = _pgbulk.ingest(
        conninfo(conn),
        _ddl(metadata),
        lookup,
        names,
        classes,
        source,
        start=start,
        start_value=start_value,
        mode_name=mode_name,
        upsert=do_upsert,
        lock_timeout_ms=None if lock_timeout is None else int(lock_timeout * 1000),
        on_commit=committed,
        before_visible=before_visible,
        rewrite=rewrite,
        labels=labels,
        columns=[[c.name for c in table.columns] for table in tables],
    )
    return IngestReport(
        batches=report["batches"],
        tables={name: TableCounts(**c) for name, c in report["tables"].items()},
        skipped=dict(report["skipped"]),
        migrations=list(report["migrations"]),
        seconds=report["seconds"],
    )

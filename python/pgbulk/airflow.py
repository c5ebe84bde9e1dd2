"""pgbulk as Airflow tasks (importable when Airflow 3 is installed).

``PgbulkSyncOperator`` is ``pgbulk.sync`` and ``PgbulkLoadOperator`` is
``pgbulk.load_csv``, taking Airflow connection ids; their options are
templated fields, so ``{{ ds }}`` windows work. The report goes to XCom as a
dict, and its notes go to the task's log. ``sync_task`` and ``load_task``
are the same for TaskFlow ``@task`` code. Connections become libpq URIs
from ``Connection.get_uri()`` with the Airflow-only extras dropped; no URI
is ever logged.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Connection

import pgbulk

# The libpq connection parameters a URI's query may carry; other extras of
# an Airflow connection (cursor, iam, aws_conn_id, ...) are Airflow's own.
LIBPQ_PARAMETERS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "fallback_application_name",
        "gssencmode",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "options",
        "passfile",
        "port",
        "require_auth",
        "requirepeer",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
    }
)


def conn_uri(conn_id: str) -> str:
    """The libpq URI of Airflow connection ``conn_id`` (``postgresql://``,
    only libpq parameters in its query). Not for logs: it holds the
    password."""
    uri = Connection.get(conn_id).get_uri()
    parts = urllib.parse.urlsplit(uri)
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k in LIBPQ_PARAMETERS
    ]
    return str(
        urllib.parse.urlunsplit(
            ("postgresql", parts.netloc, parts.path, urllib.parse.urlencode(query), "")
        )
    )


_LOG = logging.getLogger(__name__)


def _reported(report: pgbulk.LoadReport) -> dict[str, Any]:
    """The report as a dict; its notes go to the task's log (a standby
    source, transactions a watermark cannot see past, ...)."""
    for note in report.notes:
        _LOG.info("pgbulk: %s", note)
    return dataclasses.asdict(report)


def sync_task(
    source_conn_id: str,
    conn_id: str,
    *,
    table: str | None = None,
    query: str | None = None,
    to: str | None = None,
    where: str | None = None,
    mode: pgbulk.LoadMode | None = None,
    key: Sequence[str] | None = None,
    incremental: str | None = None,
    jobs: int = 1,
    delete_missing: bool = False,
    ignore_extra: bool = False,
    batch_rows: int | None = None,
    schema: str | None = None,
) -> dict[str, Any]:
    """``pgbulk.sync`` from Airflow connection ``source_conn_id`` into
    ``conn_id``; the report as a dict (for XCom)."""
    report = pgbulk.sync(
        conn_uri(source_conn_id),
        db=conn_uri(conn_id),
        table=table,
        query=query,
        to=to,
        where=where,
        mode=mode,
        key=key,
        incremental=incremental,
        jobs=jobs,
        delete_missing=delete_missing,
        ignore_extra=ignore_extra,
        batch_rows=batch_rows,
        schema=schema,
    )
    return _reported(report)


def load_task(
    paths: str | Sequence[str],
    table: str,
    conn_id: str,
    *,
    mode: pgbulk.LoadMode | None = None,
    key: Sequence[str] | None = None,
    schema: str | None = None,
    delimiter: str | None = None,
    batch_rows: int | None = None,
    max_errors: int = 0,
    reject_file: str | None = None,
    ignore_extra: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """``pgbulk.load_csv`` into Airflow connection ``conn_id``; the report
    as a dict (for XCom). ``options`` are ``pgbulk.load_csv``'s other
    arguments (``header``, ``null``, ``encoding``, ``format``, ``types``,
    ``columns``, ...)."""
    report = pgbulk.load_csv(
        paths,
        table,
        db=conn_uri(conn_id),
        mode=mode,
        key=key,
        schema=schema,
        delimiter=delimiter,
        batch_rows=batch_rows,
        max_errors=max_errors,
        reject_file=reject_file,
        ignore_extra=ignore_extra,
        **options,
    )
    return _reported(report)


class PgbulkSyncOperator(BaseOperator):
    """Syncs a table (or query) of ``source_conn_id`` into ``conn_id``, as
    ``pgbulk sync``. ``where`` with ``delete_missing`` replaces a window
    (e.g. a day: ``created_at::date = '{{ ds }}'``), so a re-run of a day
    is idempotent and days backfill in parallel."""

    template_fields: Sequence[str] = (
        "table",
        "query",
        "to",
        "where",
        "key",
        "mode",
        "incremental",
        "schema",
    )

    def __init__(
        self,
        *,
        source_conn_id: str,
        conn_id: str,
        table: str | None = None,
        query: str | None = None,
        to: str | None = None,
        where: str | None = None,
        mode: pgbulk.LoadMode | None = None,
        key: Sequence[str] | None = None,
        incremental: str | None = None,
        jobs: int = 1,
        delete_missing: bool = False,
        ignore_extra: bool = False,
        batch_rows: int | None = None,
        schema: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.conn_id = conn_id
        self.table = table
        self.query = query
        self.to = to
        self.where = where
        self.mode = mode
        self.key = key
        self.incremental = incremental
        self.jobs = jobs
        self.delete_missing = delete_missing
        self.ignore_extra = ignore_extra
        self.batch_rows = batch_rows
        self.schema = schema

    def execute(self, context: Any) -> dict[str, Any]:
        self.log.info(
            "pgbulk sync of %s from connection %s into connection %s",
            self.table or "a query",
            self.source_conn_id,
            self.conn_id,
        )
        report = sync_task(
            self.source_conn_id,
            self.conn_id,
            table=self.table,
            query=self.query,
            to=self.to,
            where=self.where,
            mode=self.mode,
            key=self.key,
            incremental=self.incremental,
            jobs=self.jobs,
            delete_missing=self.delete_missing,
            ignore_extra=self.ignore_extra,
            batch_rows=self.batch_rows,
            schema=self.schema,
        )
        self.log.info(
            "%s rows read: %s inserted, %s updated, %s unchanged, %s deleted",
            report["rows_read"],
            report["inserted"],
            report["updated"],
            report["unchanged"],
            report["deleted"],
        )
        return report


class PgbulkLoadOperator(BaseOperator):
    """Loads CSV files (paths or globs, templated) into a table of
    ``conn_id``, as ``pgbulk load``: each file once, resumable.
    ``load_options`` are ``pgbulk.load_csv``'s other arguments by name
    (``{"types": {"zip": "text"}, "header": False}``)."""

    template_fields: Sequence[str] = ("paths", "table", "key", "mode", "schema", "reject_file")

    def __init__(
        self,
        *,
        paths: str | Sequence[str],
        table: str,
        conn_id: str,
        mode: pgbulk.LoadMode | None = None,
        key: Sequence[str] | None = None,
        schema: str | None = None,
        delimiter: str | None = None,
        batch_rows: int | None = None,
        max_errors: int = 0,
        reject_file: str | None = None,
        ignore_extra: bool = False,
        load_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.load_options = dict(load_options or {})
        self.paths = paths
        self.table = table
        self.conn_id = conn_id
        self.mode = mode
        self.key = key
        self.schema = schema
        self.delimiter = delimiter
        self.batch_rows = batch_rows
        self.max_errors = max_errors
        self.reject_file = reject_file
        self.ignore_extra = ignore_extra

    def execute(self, context: Any) -> dict[str, Any]:
        self.log.info("pgbulk load into %s of connection %s", self.table, self.conn_id)
        return load_task(
            self.paths,
            self.table,
            self.conn_id,
            mode=self.mode,
            key=self.key,
            schema=self.schema,
            delimiter=self.delimiter,
            batch_rows=self.batch_rows,
            max_errors=self.max_errors,
            reject_file=self.reject_file,
            ignore_extra=self.ignore_extra,
            **self.load_options,
        )


__all__ = [
    "PgbulkLoadOperator",
    "PgbulkSyncOperator",
    "conn_uri",
    "load_task",
    "sync_task",
]

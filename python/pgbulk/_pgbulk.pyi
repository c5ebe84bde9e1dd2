from collections.abc import Callable, Iterable
from typing import Any

__version__: str

def load_csv(
    paths: list[str],
    table_name: str,
    *,
    db: str | None = ...,
    mode_name: str | None = ...,
    key: list[str] | None = ...,
    schema_ddl: str | None = ...,
    delimiter: str | None = ...,
    header: bool | None = ...,
    null: str | None = ...,
    encoding: str | None = ...,
    batch_rows: int | None = ...,
    max_errors: int = ...,
    reject_file: str | None = ...,
    restart: bool = ...,
    single_transaction: bool = ...,
    ignore_extra: bool = ...,
    streams: int | None = ...,
    retries: int = ...,
    dry_run: bool = ...,
    input_format: str | None = ...,
) -> dict[str, Any]: ...
def sync(
    source: str,
    *,
    table_name: str | None = ...,
    query: str | None = ...,
    db: str | None = ...,
    to: str | None = ...,
    where_sql: str | None = ...,
    mode_name: str | None = ...,
    key: list[str] | None = ...,
    incremental: str | None = ...,
    lookback_seconds: float | None = ...,
    jobs: int = ...,
    delete_missing: bool = ...,
    ignore_extra: bool = ...,
    batch_rows: int | None = ...,
    dry_run: bool = ...,
    schema_ddl: str | None = ...,
) -> dict[str, Any]: ...
def export(
    source: str | None,
    tables: list[str],
    to: str,
    *,
    query: str | None = ...,
    to_table: str | None = ...,
    key: list[str] | None = ...,
    where_sql: str | None = ...,
    incremental: str | None = ...,
    lookback_seconds: float | None = ...,
    array_nulls: str | None = ...,
    bigquery_endpoint: str | None = ...,
    dry_run: bool = ...,
) -> list[tuple[str, dict[str, Any] | BaseException]]: ...
def plan(schema_ddl: str, *, db: str | None = ...) -> dict[str, Any]: ...
def local_start() -> str: ...
def local_stop() -> bool: ...
def local_remove() -> bool: ...
def ingest(
    db: str | None,
    ddl: str,
    lookup: dict[Any, int],
    names: list[tuple[str | None, str]],
    json: list[list[bool]],
    source: Callable[[str | None], Iterable[Any]],
    *,
    start: str = ...,
    start_value: str | None = ...,
    mode_name: str = ...,
    upsert: bool = ...,
    lock_timeout_ms: int | None = ...,
    on_commit: Callable[[int, dict[str, dict[str, int]]], None] | None = ...,
    before_visible: Callable[[str, int, Any], None] | None = ...,
    rewrite: bool = ...,
) -> dict[str, Any]: ...
def write(
    data: object,
    table_name: str,
    *,
    db: str | None = ...,
    mode_name: str | None = ...,
    key: list[str] | None = ...,
    schema_ddl: str | None = ...,
    create: bool = ...,
    batch_rows: int | None = ...,
    single_transaction: bool = ...,
    ignore_extra: bool = ...,
    streams: int | None = ...,
    rewrite: bool = ...,
) -> dict[str, Any]: ...
def status(table_name: str, *, db: str | None = ...) -> dict[str, Any]: ...
def partitioned_begin(
    data: object,
    table_name: str,
    *,
    db: str | None = ...,
    mode_name: str | None = ...,
    key: list[str] | None = ...,
    schema_ddl: str | None = ...,
    on_duplicate: str | None = ...,
    ignore_extra: bool = ...,
    lock_timeout_ms: int | None = ...,
    create: bool = ...,
    stale_after_seconds: int = ...,
) -> dict[str, Any]: ...
def partitioned_stage(
    data: object,
    table_name: str,
    write: str,
    partition: int,
    *,
    db: str | None = ...,
    ignore_extra: bool = ...,
    lock_timeout_ms: int | None = ...,
) -> dict[str, Any]: ...
def partitioned_commit(
    data: object,
    table_name: str,
    write: str,
    partitions: list[int],
    *,
    db: str | None = ...,
    mode_name: str | None = ...,
    key: list[str] | None = ...,
    schema_ddl: str | None = ...,
    on_duplicate: str | None = ...,
    ignore_extra: bool = ...,
    lock_timeout_ms: int | None = ...,
    rewrite: bool = ...,
) -> dict[str, Any]: ...
def partitioned_abort(table_name: str, write: str, *, db: str | None = ...) -> int: ...

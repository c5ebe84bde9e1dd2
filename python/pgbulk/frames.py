"""pandas DataFrames handed to :func:`pgbulk.write`, as Arrow.

Two things pyarrow's own reading (pandas' ``__arrow_c_stream__``) gets wrong
for a table:

- The index. An unnamed index other than ``0, 1, 2, ...`` (any filtered
  frame's) became a column ``__index_level_0__``: refused by an existing
  table, created in a new one. An unnamed index is left out; a named one
  (``set_index("id")``) is data and becomes columns of its names.
- Columns of dicts. pyarrow reads them as a struct of every key any row
  has, null where a row lacks one, so ``{"a": 1}`` beside ``{"b": 2}``
  would be stored as ``{"a": 1, "b": null}``. Such a column goes as JSON
  text instead (the ``arrow.json`` extension type: a ``jsonb`` column when
  the table is created), each dict as ``json.dumps`` writes it, as
  psycopg's ``Jsonb`` does.
- Columns of ``decimal.Decimal``. pyarrow reads them as one decimal type:
  the largest scale any value has and the precision of the values seen,
  so ``Decimal("1.5")`` became ``1.50`` and a created ``numeric(5,2)``
  refused the next batch's ``1234.5``. Such a column goes as each value's
  text (``str``, as psycopg sends a Decimal), marked for a ``numeric``
  column when the table is created; a NaN Decimal is missing, as pandas
  reads it.

A polars DataFrame with a column of nulls (dtype ``Null``, alone or inside
a list or struct: a column no row has a value for) goes through pyarrow's
reading of it: polars hands such arrays over with a buffer the Arrow C
interface says they have none of, which the Rust reader refuses.

Other inputs pass through untouched.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import sys
import uuid
from collections.abc import Mapping
from typing import Any

from .errors import DataError

_JSON = {b"ARROW:extension:name": b"arrow.json"}
_NUMERIC = {b"pgbulk:type": b"numeric"}


def as_arrow(data: object) -> object:
    """``data``, or, for a pandas DataFrame, its Arrow stream as described
    above (read when pgbulk asks for it, so that pyarrow's refusal of a
    column is the same ``DataError`` as for any other data)."""
    pl = sys.modules.get("polars")
    if pl is not None and isinstance(data, pl.DataFrame):
        if any(_has_null(dtype, pl) for dtype in data.schema.values()):
            return data.to_arrow()
        return data
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(data, pd.DataFrame):
        return data
    named = [n for n in data.index.names if n is not None]
    frame = data.reset_index(level=named) if named else data.copy(deep=False)
    objects = [(name, column) for name, column in frame.items() if column.dtype == object]
    names = [name for name, column in objects if _holds(column, Mapping, pd.NA)]
    for name in names:
        frame[name] = [_json(value, name, row, pd.NA) for row, value in enumerate(frame[name])]
    decimals = [name for name, column in objects if _holds(column, decimal.Decimal, pd.NA)]
    for name in decimals:
        frame[name] = [None if _missing(value, pd.NA) else str(value) for value in frame[name]]
    return _Frame(frame, [str(n) for n in names], [str(n) for n in decimals])


class _Frame:
    """A pandas DataFrame read as Arrow without its index, ``json`` its
    columns of JSON text, ``numeric`` its columns of decimal text."""

    def __init__(self, frame: Any, json: list[str], numeric: list[str]) -> None:
        self.frame = frame
        self.json = json
        self.numeric = numeric

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        import pyarrow as pa

        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        marked = [(n, _JSON) for n in self.json] + [(n, _NUMERIC) for n in self.numeric]
        if marked:
            schema = table.schema
            for name, metadata in marked:
                i = schema.get_field_index(name)
                field = schema.field(i).with_type(pa.string()).with_metadata(metadata)
                schema = schema.set(i, field)
            table = pa.Table.from_arrays(table.columns, schema=schema)
        return table.__arrow_c_stream__(requested_schema)


def _has_null(dtype: Any, pl: Any) -> bool:
    """Whether the polars ``dtype`` is ``Null`` or holds it."""
    if dtype == pl.Null:
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _has_null(dtype.inner, pl)
    if isinstance(dtype, pl.Struct):
        return any(_has_null(field.dtype, pl) for field in dtype.fields)
    return False


def _missing(value: Any, na: Any) -> bool:
    return (
        value is None
        or value is na
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, decimal.Decimal) and value.is_nan())
    )


def _holds(column: Any, kind: type, na: Any) -> bool:
    """Every value of ``column`` is a ``kind`` or missing, and one is a
    ``kind`` (a column of text stops at its first value)."""
    seen = False
    for value in column:
        if _missing(value, na):
            continue
        if not isinstance(value, kind):
            return False
        seen = True
    return seen


def _json(value: Any, name: str, row: int, na: Any) -> str | None:
    if _missing(value, na):
        return None
    try:
        return json.dumps(value, allow_nan=False, default=_plain)
    except (TypeError, ValueError) as e:
        error = DataError(f'row {row + 1} of the data: column "{name}": {e}')
        error.column = str(name)
        error.line = row + 1
        raise error from None


def _plain(value: Any) -> Any:
    """What ``json.dumps`` cannot write by itself: numpy's scalars as the
    Python number or bool they hold, dates and times in ISO form, UUIDs as
    text; anything else is refused."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"a {type(value).__name__} has no JSON form (convert it first)")

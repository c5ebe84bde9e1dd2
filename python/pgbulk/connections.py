"""Connection arguments: what ``--db`` takes, or a connection the caller
already holds (psycopg 3, psycopg2, a SQLAlchemy connection or engine),
turned into a libpq ``key=value`` string for pgbulk's own connections.

The password comes from the connection object itself (``info.password``;
``info.dsn`` never holds it), so pgbulk connects as the caller did. Nothing
here logs or keeps it.
"""

from __future__ import annotations

from typing import Any

# libpq parameters worth carrying over from a live connection.
_KEYS = (
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "application_name",
    "options",
    "connect_timeout",
    "target_session_attrs",
    "gssencmode",
)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _from_parameters(params: dict[str, Any], password: str | None) -> str:
    parts = [f"{k}={_quote(str(params[k]))}" for k in _KEYS if params.get(k) not in (None, "")]
    if password:
        parts.append(f"password={_quote(password)}")
    return " ".join(parts)


def conninfo(db: Any) -> str | None:
    """``db`` as a connection string for the library (``None`` stays
    ``None``: libpq's defaults, then pgbulk's local cluster)."""
    if db is None or isinstance(db, str):
        return db
    # SQLAlchemy: an Engine (its URL), or a Connection (its DBAPI one).
    url = getattr(db, "url", None)
    if url is not None and hasattr(url, "render_as_string"):
        rendered = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
        return str(rendered)
    inner = getattr(db, "connection", None)
    driver = getattr(inner, "driver_connection", None)
    if driver is not None:
        return conninfo(driver)
    info = getattr(db, "info", None)
    # psycopg 3: ConnectionInfo.get_parameters() omits the password.
    if info is not None and hasattr(info, "get_parameters"):
        return _from_parameters(info.get_parameters(), getattr(info, "password", None))
    # psycopg2: ConnectionInfo.dsn_parameters, password separately.
    if info is not None and hasattr(info, "dsn_parameters"):
        return _from_parameters(info.dsn_parameters, getattr(info, "password", None))
    raise TypeError(
        "db: a connection string (URI, key=value, service=NAME, a database name),"
        f" a psycopg or psycopg2 connection, or a SQLAlchemy connection or engine; not {type(db)!r}"
    )

"""The exceptions pgbulk raises: one class per kind of failure.

Every exception carries what the library knows about where it happened
(``None`` where unknown): ``table``, ``column``, ``input`` (the file),
``line``, ``value``, ``batch`` and ``row`` (of the batch's rows, 1 for
the first), and ``notes`` (what was detected of
the input before the failure); a refusal by the server also its
``sqlstate``, ``detail`` and ``hint``, as PostgreSQL reported them.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of pgbulk's exceptions."""

    table: str | None = None
    column: str | None = None
    input: str | None = None
    line: int | None = None
    value: str | None = None
    batch: int | None = None
    row: int | None = None
    sqlstate: str | None = None
    detail: str | None = None
    hint: str | None = None
    notes: list[str] | None = None
    """What was found out before the failure (a delimiter or format
    detected), as a report's ``notes`` would have said it; may be empty."""


class ConfigError(Error):
    """Settings, a service or password file, a name or an option are wrong."""


class ConnectError(Error):
    """No server could be reached, or TLS could not be set up as asked."""


class AuthError(Error):
    """The server rejected the credentials, or a needed password is missing."""


class LocalError(Error):
    """pgbulk's local cluster could not be created, started or stopped."""


class ServerError(Error):
    """The server refused a statement (``sqlstate``, ``detail``, ``hint``)."""


class DataError(Error):
    """A row or value does not fit its table; nothing of its batch was kept."""


class ConnectionLostError(Error):
    """The connection went away mid-run; running again continues."""


class IOError(Error):  # noqa: A001 - mirrors the library's kind
    """A local file or process failed."""


__all__ = [
    "AuthError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "DataError",
    "Error",
    "IOError",
    "LocalError",
    "ServerError",
]

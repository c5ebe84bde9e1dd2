"""pgbulk's own local PostgreSQL cluster (under ``$PGBULK_HOME``), for
notebooks and tests: the cluster ``pgbulk local`` manages."""

from __future__ import annotations

from . import _pgbulk


def start() -> str:
    """Create the cluster if needed, start it if it is not running, and
    return the URL of its ``postgres`` database."""
    return _pgbulk.local_start()


def stop() -> bool:
    """Stop the cluster; ``True`` if it was running."""
    return _pgbulk.local_stop()


def remove() -> bool:
    """Stop the cluster and delete it (its data, log and password); ``True``
    if there was one."""
    return _pgbulk.local_remove()

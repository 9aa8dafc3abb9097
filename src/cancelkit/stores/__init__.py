"""Stores for :func:`cancelkit.transaction`: SQLite (embedded default) and PostgreSQL."""

from .._exceptions import StoreUnavailable as StoreUnavailable
from .._module import publish as _publish
from ._postgres import PostgresStore as PostgresStore
from ._sqlite import SQLiteStore as SQLiteStore

__all__ = ("PostgresStore", "SQLiteStore", "StoreUnavailable")

_publish(__name__, globals())

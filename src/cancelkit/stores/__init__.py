"""Stores for :func:`cancelkit.transaction`: SQLite (embedded default) and PostgreSQL."""

from ._errors import StoreUnavailable as StoreUnavailable
from ._postgres import PostgresStore as PostgresStore
from ._sqlite import SQLiteStore as SQLiteStore

__all__ = ("PostgresStore", "SQLiteStore", "StoreUnavailable")

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name

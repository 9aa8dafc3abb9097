"""The SQL both stores speak: the run ledger, the outbox, and staged writes rendered."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

from .._exceptions import CancelReason
from .._transaction import LedgerRow, Write
from ._owner import is_gone

__all__ = ("Dialect", "ledger_row")


def ledger_row(row: tuple[Any, ...] | None) -> LedgerRow | None:
    """A ``cancelkit_runs`` row (as ``Dialect.select`` reads it) as a :class:`LedgerRow`."""
    if row is None:
        return None
    run_id, status, kind, message, attempts = row
    reason = CancelReason(kind, message or "") if kind else None
    return LedgerRow(run_id, status, reason, attempts)


def _quote(name: str) -> str:
    return ".".join(f'"{part}"' for part in name.split("."))


@dataclass(frozen=True)
class Dialect:
    """Placeholders and types of one database."""

    placeholder: str
    serial: str
    real: str

    def ddl(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS cancelkit_runs ("
            " run_id TEXT PRIMARY KEY,"
            " status TEXT NOT NULL CHECK (status IN ('running','committed','cancelled','failed')),"
            " reason_kind TEXT, reason_message TEXT,"
            " attempts INTEGER NOT NULL DEFAULT 1,"
            f" updated_at {self.real} NOT NULL,"
            f" owner TEXT, lease_until {self.real})",
            "CREATE TABLE IF NOT EXISTS cancelkit_outbox ("
            f" id {self.serial},"
            " run_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL)",
        ]

    def added_columns(self) -> list[tuple[str, str]]:
        """Columns later versions added to ``cancelkit_runs``: (name, type), for
        stores to add to a table an earlier version created."""
        return [("owner", "TEXT"), ("lease_until", self.real)]

    @property
    def begin(self) -> str:
        """Parameters: run_id, now, owner, lease_until."""
        p = self.placeholder
        return (
            "INSERT INTO cancelkit_runs (run_id, status, attempts, updated_at, owner, lease_until)"
            f" VALUES ({p}, 'running', 1, {p}, {p}, {p}) ON CONFLICT (run_id) DO NOTHING"
        )

    @property
    def select(self) -> str:
        return (
            "SELECT run_id, status, reason_kind, reason_message, attempts FROM cancelkit_runs"
            f" WHERE run_id = {self.placeholder}"
        )

    @property
    def reopen(self) -> str:
        """Parameters: now, owner, lease_until, run_id."""
        p = self.placeholder
        return (
            "UPDATE cancelkit_runs SET status = 'running', reason_kind = NULL,"
            f" reason_message = NULL, attempts = attempts + 1, updated_at = {p},"
            f" owner = {p}, lease_until = {p}"
            f" WHERE run_id = {p} AND status IN ('cancelled', 'failed')"
        )

    @property
    def running_owners(self) -> str:
        return "SELECT DISTINCT owner FROM cancelkit_runs WHERE status = 'running'"

    @property
    def settle_owner(self) -> str:
        """Parameters: reason kind, message, now, owner."""
        p = self.placeholder
        return (
            f"UPDATE cancelkit_runs SET status = 'cancelled', reason_kind = {p},"
            f" reason_message = {p}, updated_at = {p}"
            f" WHERE status = 'running' AND owner = {p}"
        )

    @property
    def settle_expired(self) -> str:
        """Parameters: reason kind, message, now, now."""
        p = self.placeholder
        return (
            f"UPDATE cancelkit_runs SET status = 'cancelled', reason_kind = {p},"
            f" reason_message = {p}, updated_at = {p}"
            f" WHERE status = 'running' AND lease_until < {p}"
        )

    @property
    def commit_guard(self) -> str:
        p = self.placeholder
        return (
            f"UPDATE cancelkit_runs SET status = 'committed', updated_at = {p}"
            f" WHERE run_id = {p} AND status = 'running'"
        )

    @property
    def finish(self) -> str:
        p = self.placeholder
        return (
            f"UPDATE cancelkit_runs SET status = {p}, reason_kind = {p}, reason_message = {p},"
            f" updated_at = {p} WHERE run_id = {p} AND status = 'running'"
        )

    def reconcile(
        self, owners: Sequence[str | None], now: float
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements that settle rows nobody will finish: those of an owner on
        this host that has ended, and those whose lease expired (kind ``shutdown``)."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                self.settle_owner,
                ("shutdown", f"its process ({owner}) ended without finishing it", now, owner),
            )
            for owner in owners
            if owner is not None and is_gone(owner)
        ]
        expired = ("shutdown", "its owner's lease expired before it finished", now, now)
        statements.append((self.settle_expired, expired))
        return statements

    def render(self, write: Write) -> tuple[str, tuple[Any, ...]]:
        """The SQL and parameters of a staged write."""
        if write.kind == "sql":
            return write.sql, write.params
        sql = self._template(write.kind, write.table, write.columns, write.keys)
        return sql, write.values + write.key_values if write.key_values else write.values

    def batches(self, writes: Sequence[Write]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Staged writes rendered, consecutive ones with the same SQL grouped together
        (for ``executemany``), in their original order."""
        grouped: list[tuple[str, list[tuple[Any, ...]]]] = []
        for write in writes:
            sql, params = self.render(write)
            if grouped and grouped[-1][0] == sql:
                grouped[-1][1].append(params)
            else:
                grouped.append((sql, [params]))
        return grouped

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - a few dialects, kept for the process
    def _template(
        self, kind: str, table: str, columns: tuple[str, ...], keys: tuple[str, ...]
    ) -> str:
        p = self.placeholder
        where = " AND ".join(f"{_quote(k)} = {p}" for k in keys)
        if kind == "insert":
            names = ", ".join(_quote(c) for c in columns)
            marks = ", ".join(p for _ in columns)
            return f"INSERT INTO {_quote(table)} ({names}) VALUES ({marks})"
        if kind == "update":
            assignments = ", ".join(f"{_quote(c)} = {p}" for c in columns)
            return f"UPDATE {_quote(table)} SET {assignments} WHERE {where}"
        return f"DELETE FROM {_quote(table)} WHERE {where}"

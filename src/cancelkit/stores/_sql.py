"""The SQL both stores speak: the run ledger, the outbox, and staged writes rendered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._transaction import Write

__all__ = ("Dialect",)


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
            f" updated_at {self.real} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS cancelkit_outbox ("
            f" id {self.serial},"
            " run_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL)",
        ]

    @property
    def begin(self) -> str:
        p = self.placeholder
        return (
            "INSERT INTO cancelkit_runs (run_id, status, attempts, updated_at)"
            f" VALUES ({p}, 'running', 1, {p}) ON CONFLICT (run_id) DO NOTHING"
        )

    @property
    def select(self) -> str:
        return (
            "SELECT run_id, status, reason_kind, reason_message, attempts FROM cancelkit_runs"
            f" WHERE run_id = {self.placeholder}"
        )

    @property
    def reopen(self) -> str:
        p = self.placeholder
        return (
            "UPDATE cancelkit_runs SET status = 'running', reason_kind = NULL,"
            f" reason_message = NULL, attempts = attempts + 1, updated_at = {p}"
            f" WHERE run_id = {p} AND status IN ('cancelled', 'failed')"
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

    def render(self, write: Write) -> tuple[str, tuple[Any, ...]]:
        """The SQL and parameters of a staged write."""
        p = self.placeholder
        if write.kind == "sql":
            return write.sql, write.params
        where = " AND ".join(f"{_quote(k)} = {p}" for k, _ in write.where)
        where_values = tuple(v for _, v in write.where)
        if write.kind == "insert":
            columns = ", ".join(_quote(k) for k, _ in write.values)
            marks = ", ".join(p for _ in write.values)
            sql = f"INSERT INTO {_quote(write.table)} ({columns}) VALUES ({marks})"
            return sql, tuple(v for _, v in write.values)
        if write.kind == "update":
            assignments = ", ".join(f"{_quote(k)} = {p}" for k, _ in write.values)
            values = tuple(v for _, v in write.values)
            return (
                f"UPDATE {_quote(write.table)} SET {assignments} WHERE {where}",
                values + where_values,
            )
        return f"DELETE FROM {_quote(write.table)} WHERE {where}", where_values

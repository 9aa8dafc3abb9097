"""``SQLiteStore``: the embedded default, on the standard library's ``sqlite3``.

Every operation runs to its end in the store's own thread (one writer per database,
never shared with user tools) while the caller waits shielded
(:func:`cancelkit._threads.run_sync_shielded`): a cancelled await never leaves a
write running behind it, and an operation that could not start in time is
withdrawn, never run later. A commit that overruns its timeout is stopped with
``Connection.interrupt()`` and rolled back; a connection interrupted or failed is
closed, not reused. WAL journal, ``synchronous=NORMAL``, ``BEGIN IMMEDIATE`` for
commits so that a concurrent cancel waits for the commit (or the other way round).

One statement is tried in the caller's thread first: the ledger's one-row
``finish`` (a run cancelled or failed), on the Stop path of every run. Through the
store's thread it is two hand-offs between threads, each waiting for a turn of a
busy event loop (tens of ms at a few hundred streams); done at once it costs about
0.1 ms of the loop. It is done at once only when the database is free this instant
(a connection of its own, ``busy_timeout=0``, no checkpointing: it never waits for a
lock nor writes back the WAL); otherwise it goes through the thread as the rest.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import CancelReason, StoreUnavailable
from .._threads import Executor, run_sync_shielded
from .._transaction import LedgerRow, Write
from .._validate import positive_int, seconds
from ._owner import this_process
from ._sql import Dialect, ledger_row

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

__all__ = ("SQLiteStore",)

_DIALECT = Dialect("?", "INTEGER PRIMARY KEY AUTOINCREMENT", "REAL")
_CANCEL = CancelReason("user", "cancelled")
_QUICK = 30.0  # seconds for the ledger's one-row statements (they wait on locks)


class SQLiteStore:
    """Runs and staged writes in a SQLite file.

    Args:
        path: the database file (created if missing; its folder must exist).
        busy_timeout: seconds a statement waits for another writer's lock.
        pool_size: connections kept open for reuse.
        on_connect: called with each new connection (to register functions, say).
        lease: seconds a run's row is held for its process; after a crash, a row
            past its lease (or whose process on this host is gone) is settled as
            ``cancelled`` (kind ``shutdown``) by the next :meth:`setup`.
    """

    paramstyle = "qmark"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        pool_size: int = 4,
        on_connect: Callable[[sqlite3.Connection], object] | None = None,
        lease: float = 3600.0,
    ) -> None:
        self.path = Path(path)
        timeout = seconds(busy_timeout, "busy_timeout", allow_none=False)
        held = seconds(lease, "lease", allow_none=False)
        assert held is not None
        self.lease = held
        size = positive_int(pool_size, "pool_size")
        assert timeout is not None
        assert size is not None
        self._busy = timeout
        self._size = size
        self._on_connect = on_connect
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._now: sqlite3.Connection | None = None  # for _try_now, made by setup()
        self._now_lock = threading.Lock()
        self._executor = Executor(1, name="cancelkit-sqlite", max_abandoned=1)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy, isolation_level=None, check_same_thread=False
            )
            _use_wal(conn, self._busy)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        if self._on_connect is not None:
            self._on_connect(conn)
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: sqlite3.Connection, healthy: bool) -> None:
        if healthy and not conn.in_transaction:
            with self._lock:
                if len(self._idle) < self._size:
                    self._idle.append(conn)
                    return
        conn.close()

    async def _run(self, work: Callable[[sqlite3.Connection], Any], timeout: float) -> Any:
        holder: list[sqlite3.Connection] = []

        def in_thread() -> Any:
            conn = self._acquire()
            holder.append(conn)
            healthy = False
            try:
                result = work(conn)
                healthy = True
                return result
            finally:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        healthy = False
                self._release(conn, healthy)

        def interrupt() -> None:
            if holder:
                holder[0].interrupt()

        return await run_sync_shielded(
            self._executor, in_thread, timeout=timeout, on_timeout=interrupt
        )

    async def setup(self) -> None:
        """Create the ledger (``cancelkit_runs``) and outbox tables if missing, and
        settle the rows of runs whose process ended without finishing them."""

        def create(conn: sqlite3.Connection) -> None:
            for statement in _DIALECT.ddl():
                conn.execute(statement)
            present = {row[1] for row in conn.execute("PRAGMA table_info(cancelkit_runs)")}
            for name, kind in _DIALECT.added_columns():
                if name not in present:
                    conn.execute(f"ALTER TABLE cancelkit_runs ADD COLUMN {name} {kind}")

        await self._run(create, _QUICK)
        await self.reconcile()
        if self._now is None:
            self._now = await self._run(lambda _conn: self._connect_now(), _QUICK)

    def _connect_now(self) -> sqlite3.Connection:
        """The connection of :meth:`_try_now`: it never waits for a lock (``busy``
        at once) and never checkpoints (the store's own connections do)."""
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _try_now(self, sql: str, params: tuple[Any, ...]) -> int | None:
        """Run one statement in this thread if the database is free this instant: its
        row count, or ``None`` when it was not run (locked, or no connection for it)."""
        if self._now is None or not self._now_lock.acquire(blocking=False):
            return None
        try:
            conn = self._now
            if conn is None:
                return None
            try:
                return conn.execute(sql, params).rowcount
            except sqlite3.Error as exc:  # one statement in autocommit: nothing was written
                if not isinstance(exc, sqlite3.OperationalError) or "locked" not in str(exc):
                    self._now = None  # unhealthy: the store's thread will say what is wrong
                    conn.close()
                return None
        finally:
            self._now_lock.release()

    async def reconcile(self) -> int:
        """Settle rows left ``running`` by a process that is gone, or past their
        lease, as ``cancelled`` (kind ``shutdown``). Returns how many."""

        def settle(conn: sqlite3.Connection) -> int:
            owners = [row[0] for row in conn.execute(_DIALECT.running_owners)]
            conn.execute("BEGIN IMMEDIATE")
            settled = sum(
                conn.execute(sql, params).rowcount
                for sql, params in _DIALECT.reconcile(owners, time.time())
            )
            conn.execute("COMMIT")
            return settled

        result: int = await self._run(settle, _QUICK)
        return result

    async def begin(self, run_id: str) -> LedgerRow:
        def begin(conn: sqlite3.Connection) -> LedgerRow:
            conn.execute("BEGIN IMMEDIATE")
            prior = ledger_row(conn.execute(_DIALECT.select, (run_id,)).fetchone())
            now = time.time()
            owner, until = this_process(), now + self.lease
            conn.execute(_DIALECT.begin, (run_id, now, owner, until))
            conn.execute(_DIALECT.reopen, (now, owner, until, run_id))
            conn.execute("COMMIT")
            return prior or LedgerRow(run_id, "running", None, 0)

        result: LedgerRow = await self._run(begin, _QUICK)
        return result

    async def commit(self, run_id: str, writes: Sequence[Write], timeout: float) -> bool:
        batches = _DIALECT.batches(writes)

        def commit(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute(_DIALECT.commit_guard, (time.time(), run_id)).rowcount != 1:
                conn.execute("ROLLBACK")
                return False
            for sql, rows in batches:
                if len(rows) == 1:
                    conn.execute(sql, rows[0])
                else:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
            return True

        result: bool = await self._run(commit, timeout)
        return result

    async def finish(
        self, run_id: str, status: Literal["cancelled", "failed"], reason: CancelReason
    ) -> bool:
        def row() -> tuple[Any, ...]:
            return (status, reason.kind, reason.message, time.time(), run_id)

        def finish(conn: sqlite3.Connection) -> bool:
            return conn.execute(_DIALECT.finish, row()).rowcount == 1

        now = self._try_now(_DIALECT.finish, row())
        if now is not None:
            return now == 1
        result: bool = await self._run(finish, _QUICK)
        return result

    async def cancel(self, run_id: str, reason: CancelReason | None = None) -> bool:
        """Cancel ``run_id`` in the database: True if it was running (its writes never
        will be committed), False if it had committed or ended already."""
        return await self.finish(run_id, "cancelled", reason or _CANCEL)

    async def state(self, run_id: str) -> LedgerRow | None:
        def read(conn: sqlite3.Connection) -> LedgerRow | None:
            return ledger_row(conn.execute(_DIALECT.select, (run_id,)).fetchone())

        result: LedgerRow | None = await self._run(read, _QUICK)
        return result

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside any run (for reads and schema); its rows."""

        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, tuple(params)).fetchall()

        result: list[tuple[Any, ...]] = await self._run(run, _QUICK)
        return result

    async def aclose(self) -> None:
        """Close the pooled connections and let the store's thread end."""
        with self._lock:
            idle, self._idle = self._idle, []
        with self._now_lock:
            now, self._now = self._now, None
        for conn in [*idle, *([now] if now is not None else [])]:
            conn.close()
        self._executor.close()


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Put the database in WAL mode (once per file; a no-op after).

    Switching modes needs the file to itself, and SQLite answers "database is locked"
    at once, without its busy handler, when another process opens the same new file
    at that moment (several workers starting together): retry for ``patience`` s.
    """
    deadline = time.monotonic() + patience
    pause = 0.005
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
            continue
        if str(mode).lower() == "wal":
            return
        raise sqlite3.OperationalError(f"SQLite kept journal_mode={mode}, not WAL")

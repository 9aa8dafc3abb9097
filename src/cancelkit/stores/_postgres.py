"""``PostgresStore``: runs and staged writes in PostgreSQL, on psycopg 3 with a pool.

Each operation runs to its end in a task of its own that owns its pooled connection
(:func:`cancelkit._tasks.run_shielded`), so a caller's cancellation cannot cut a
commit half-way; a commit past its timeout is cancelled (psycopg cancels the query
on the server), and any connection whose state is then unknown is closed rather than
returned to the pool: no session is left "idle in transaction". A commit sends the
ledger guard and all writes in one pipelined batch, run as one implicit transaction:
one round trip whatever the number of writes.
Needs ``pip install "cancelkit[postgres]"``, and asyncio (psycopg's pool is asyncio-only;
on trio, use ``SQLiteStore``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from .._backends import current_backend
from .._exceptions import CancelReason, StoreUnavailable
from .._tasks import run_shielded
from .._transaction import LedgerRow, Write
from .._validate import positive_int, seconds
from ._owner import this_process
from ._sql import Dialect, ledger_row

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ("PostgresStore",)

_DIALECT = Dialect("%s", "BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION")
_CANCEL = CancelReason("user", "cancelled")
_QUICK = 30.0


_GUARD = (
    "WITH moved AS (UPDATE cancelkit_runs SET status = 'committed', updated_at = %s"
    " WHERE run_id = %s AND status = 'running' RETURNING 1)"
    " SELECT 1 / count(*) FROM moved"
)


class PostgresStore:
    """Runs and staged writes in PostgreSQL.

    Args:
        dsn: a libpq connection string (``"host=/run/pg dbname=app"``, a URL, ...).
        min_size, max_size: the connection pool's bounds.
        connect_timeout: seconds to wait for the database when opening the pool.
        lease: seconds a run's row is held for its process; after a crash, a row
            past its lease (or whose process on this host is gone) is settled as
            ``cancelled`` (kind ``shutdown``) by the next :meth:`setup`.
    """

    paramstyle = "format"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        lease: float = 3600.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("PostgresStore needs a connection string")
        low, high = positive_int(min_size, "min_size"), positive_int(max_size, "max_size")
        limit = seconds(connect_timeout, "connect_timeout", allow_none=False)
        assert low is not None
        assert high is not None
        assert limit is not None
        if low > high:
            raise ValueError("min_size must not exceed max_size")
        held = seconds(lease, "lease", allow_none=False)
        assert held is not None
        self.lease = held
        self.dsn = dsn
        self._sizes = (low, high)
        self._connect_timeout = limit
        self._pool: AsyncConnectionPool[Any] | None = None

    def __repr__(self) -> str:
        return "PostgresStore(...)"

    async def _open(self) -> AsyncConnectionPool[Any]:
        if self._pool is not None:
            return self._pool
        if current_backend() != "asyncio":
            raise RuntimeError(
                "PostgresStore runs on asyncio: psycopg's connection pool is asyncio-only"
            )
        from psycopg_pool import AsyncConnectionPool, PoolTimeout  # noqa: PLC0415 - optional

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn,
            min_size=self._sizes[0],
            max_size=self._sizes[1],
            kwargs={"autocommit": True, "connect_timeout": max(1, int(self._connect_timeout))},
            open=False,
            timeout=self._connect_timeout,
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
        self._pool = pool
        return pool

    async def _run(
        self, work: Callable[[AsyncConnection[Any]], Awaitable[Any]], name: str, timeout: float
    ) -> Any:
        from psycopg import Error, OperationalError  # noqa: PLC0415

        pool = await self._open()

        async def owned() -> Any:
            async with pool.connection() as conn:
                try:
                    return await work(conn)
                except Error:
                    raise  # rolled back, state known: the pool takes it back (or drops it)
                except BaseException:
                    if not conn.closed:  # cancelled mid-way: state unknown, never reused
                        await conn.close()
                    raise

        try:
            return await run_shielded(owned(), name=name, timeout=timeout)
        except OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL failed: {exc}") from exc

    async def setup(self) -> None:
        """Create the ledger (``cancelkit_runs``) and outbox tables if missing, and
        settle the rows of runs whose process ended without finishing them."""

        async def create(conn: AsyncConnection[Any]) -> None:
            for statement in _DIALECT.ddl():
                await conn.execute(statement)
            for name, kind in _DIALECT.added_columns():
                await conn.execute(
                    f"ALTER TABLE cancelkit_runs ADD COLUMN IF NOT EXISTS {name} {kind}"
                )

        await self._run(create, "cancelkit setup", _QUICK)
        await self.reconcile()

    async def reconcile(self) -> int:
        """Settle rows left ``running`` by a process that is gone, or past their
        lease, as ``cancelled`` (kind ``shutdown``). Returns how many."""

        async def settle(conn: AsyncConnection[Any]) -> int:
            cursor = await conn.execute(_DIALECT.running_owners)
            owners = [row[0] for row in await cursor.fetchall()]
            settled = 0
            async with conn.transaction():
                for sql, params in _DIALECT.reconcile(owners, time.time()):
                    settled += (await conn.execute(sql, params)).rowcount
            return settled

        result: int = await self._run(settle, "cancelkit reconcile", _QUICK)
        return result

    async def begin(self, run_id: str) -> LedgerRow:
        async def begin(conn: AsyncConnection[Any]) -> LedgerRow:
            async with conn.transaction():
                cursor = await conn.execute(_DIALECT.select + " FOR UPDATE", (run_id,))
                prior = ledger_row(await cursor.fetchone())
                now = time.time()
                owner, until = this_process(), now + self.lease
                await conn.execute(_DIALECT.begin, (run_id, now, owner, until))
                await conn.execute(_DIALECT.reopen, (now, owner, until, run_id))
            return prior or LedgerRow(run_id, "running", None, 0)

        result: LedgerRow = await self._run(begin, f"cancelkit begin {run_id}", _QUICK)
        return result

    async def commit(self, run_id: str, writes: Sequence[Write], timeout: float) -> bool:
        batches = _DIALECT.batches(writes)

        async def commit(conn: AsyncConnection[Any]) -> bool:
            from psycopg.errors import DivisionByZero  # noqa: PLC0415

            try:
                # One round trip: the guard and the writes go in one pipelined batch
                # with no BEGIN or COMMIT. On a connection in autocommit mode the
                # statements up to the pipeline's Sync run as one implicit
                # transaction: committed together at the Sync, or, after any error,
                # the rest skipped and all of it rolled back (the connection is idle
                # again when the error is raised). The guard stops the writes by
                # itself when the run is no longer running: it divides by the number
                # of rows it moved to committed, so a lost race aborts the batch.
                async with conn.pipeline():
                    await conn.execute(_GUARD, (time.time(), run_id))
                    for sql, rows in batches:
                        if len(rows) == 1:
                            await conn.execute(sql, rows[0])
                        else:
                            await conn.cursor().executemany(sql, rows)
            except DivisionByZero:
                return False
            return True

        result: bool = await self._run(commit, f"cancelkit commit {run_id}", timeout)
        return result

    async def finish(
        self, run_id: str, status: Literal["cancelled", "failed"], reason: CancelReason
    ) -> bool:
        async def finish(conn: AsyncConnection[Any]) -> bool:
            row = (status, reason.kind, reason.message, time.time(), run_id)
            cursor = await conn.execute(_DIALECT.finish, row)
            return cursor.rowcount == 1

        result: bool = await self._run(finish, f"cancelkit finish {run_id}", _QUICK)
        return result

    async def cancel(self, run_id: str, reason: CancelReason | None = None) -> bool:
        """Cancel ``run_id`` in the database: True if it was running (its writes never
        will be committed), False if it had committed or ended already."""
        return await self.finish(run_id, "cancelled", reason or _CANCEL)

    async def state(self, run_id: str) -> LedgerRow | None:
        async def read(conn: AsyncConnection[Any]) -> LedgerRow | None:
            cursor = await conn.execute(_DIALECT.select, (run_id,))
            return ledger_row(await cursor.fetchone())

        result: LedgerRow | None = await self._run(read, f"cancelkit state {run_id}", _QUICK)
        return result

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside any run (for reads and schema); its rows."""

        async def run(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, tuple(params))
            return await cursor.fetchall() if cursor.description else []

        result: list[tuple[Any, ...]] = await self._run(run, "cancelkit execute", _QUICK)
        return result

    async def aclose(self) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

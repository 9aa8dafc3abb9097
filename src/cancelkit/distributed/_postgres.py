"""``PostgresBackend``: runs of several processes and hosts meet in PostgreSQL.

For services that have PostgreSQL (11 or later) and no Redis (``pip install
"cancelkit[postgres]"``; asyncio only, as psycopg's pool is). The design is
:class:`RedisBackend`'s, in three tables of its own, named after ``prefix`` (default
``cancelkit_``):

- ``<prefix>shared_runs``: one row per run id ever used (``owner``, ``worker``,
  ``status``, ``kind``, ``message``, ``started``, ``ended``). The row is the id's claim
  (ids are never reused) and its tombstone: the first Stop moves it from ``running``
  to ``cancelling`` with its reason, once. It is deleted ``history`` seconds after the
  run ended.
- ``<prefix>prestops``: Stops sent for an id no run has yet, one per (id, owner),
  until ``history`` seconds on. The run that starts under the id takes its owner's, or
  an ownerless one (owner ``''``); the others are dropped.
- ``<prefix>workers``: each process's lease (``lease_until``, on the database's clock).

It does not reuse the transaction store's ledger (``cancelkit_runs``): a ledger row
exists only for a run that writes, from the moment its transaction begins, while a
Stop must find every run from its first instant, and an id before any run has it.

Each decision is one statement, or one transaction that first takes an advisory lock
on the id: a run claiming an id and a Stop sent for it meet in one order or the other,
never half-way, so an early Stop is never lost between them. The wake-up is
``pg_notify`` inside the cancel's own transaction: it is sent if and only if the
tombstone committed.

Wake-ups go on one channel per process, ``cancelkit_stop_`` and 32 hex digits of the
SHA-256 of the worker's name: a plain identifier of 47 characters whatever the prefix
or the host's name, computed alike in Python (to ``LISTEN``) and in SQL (to notify a
run's holder). One shared channel would deliver every Stop to every process, each to
parse and drop all but its own; with one per process, only the holder hears it. Each
process listens on a dedicated autocommit connection; its pooled connections do the
round trips. A lost wake-up is caught by the re-read of the tombstones every
``backstop`` seconds (see :class:`BackendBase`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .._extras import require
from .._tasks import run_shielded
from .._validate import positive_int
from ._base import BackendBase, Ending, load_reason

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from psycopg import AsyncConnection
    from psycopg.sql import Composed
    from psycopg_pool import AsyncConnectionPool

    from .._exceptions import CancelReason

__all__ = ("PostgresBackend",)

T = TypeVar("T")

_MAX_PREFIX = 40  # bytes: every name made from it stays within PostgreSQL's 63
_PAYLOAD = 7900  # NOTIFY payloads are under 8000 bytes; a longer reason is read back
_CHANNEL = "cancelkit_stop_"
_INDEXES = (("runs", "live"), ("runs", "ended"), ("prestops", "expires"))
_SETTLE = """
  status = 'cancelled',
  kind = CASE WHEN r.status = 'running' THEN 'shutdown' ELSE r.kind END,
  message = CASE WHEN r.status = 'running'
    THEN 'its worker ' || r.worker || %(why)s::text ELSE r.message END,
  ended = %(now)s::float8"""

_SQL = {
    "tables": """
CREATE TABLE IF NOT EXISTS {runs} (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, worker TEXT NOT NULL, status TEXT NOT NULL,
  kind TEXT, message TEXT, started DOUBLE PRECISION, ended DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS {runs_live} ON {runs} (worker)
  WHERE status IN ('running', 'cancelling');
CREATE INDEX IF NOT EXISTS {runs_ended} ON {runs} (ended) WHERE ended IS NOT NULL;
CREATE TABLE IF NOT EXISTS {prestops} (
  id TEXT NOT NULL, owner TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
  expires TIMESTAMPTZ NOT NULL, PRIMARY KEY (id, owner));
CREATE INDEX IF NOT EXISTS {prestops_expires} ON {prestops} (expires);
CREATE TABLE IF NOT EXISTS {workers} (worker TEXT PRIMARY KEY, lease_until TIMESTAMPTZ NOT NULL)
""",
    "lock": "SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 0))",
    # Takes the waiting Stop of the run's owner (or an ownerless one), drops the others.
    "register": """
WITH used AS (SELECT 1 FROM {runs} WHERE id = %(id)s::text),
taken AS (
  DELETE FROM {prestops} WHERE id = %(id)s::text AND NOT EXISTS (SELECT 1 FROM used)
  RETURNING owner, kind, message, expires),
waiting AS (
  SELECT kind, message FROM taken
  WHERE expires > now() AND owner IN (%(owner)s::text, '')
  ORDER BY owner = %(owner)s::text DESC LIMIT 1)
INSERT INTO {runs} (id, owner, worker, status, kind, message, started)
SELECT %(id)s::text, %(owner)s::text, %(worker)s::text,
       CASE WHEN w.kind IS NULL THEN 'running' ELSE 'cancelling' END, w.kind, w.message,
       %(now)s::float8
FROM (SELECT 1) AS one LEFT JOIN waiting AS w ON true
WHERE NOT EXISTS (SELECT 1 FROM used)
ON CONFLICT (id) DO NOTHING
RETURNING kind, message
""",
    # Unknown id: keep the Stop. Running and the owner's: tombstone and wake-up, at once.
    "cancel": """
WITH kept AS (
  INSERT INTO {prestops} AS p (id, owner, kind, message, expires)
  SELECT %(id)s::text, %(owner)s::text, %(kind)s::text, %(message)s::text,
         now() + make_interval(secs => %(history)s::float8)
  WHERE NOT EXISTS (SELECT 1 FROM {runs} WHERE id = %(id)s::text)
  ON CONFLICT (id, owner) DO UPDATE
    SET kind = excluded.kind, message = excluded.message, expires = excluded.expires
    WHERE p.expires <= now()),
stopped AS (
  UPDATE {runs} SET status = 'cancelling', kind = %(kind)s::text, message = %(message)s::text
  WHERE id = %(id)s::text AND status = 'running'
    AND (%(owner)s::text = '' OR owner = %(owner)s::text)
  RETURNING worker, json_build_array(id, kind, message)::text AS payload)
SELECT pg_notify(
  '{channel}' || left(encode(sha256(convert_to(worker, 'UTF8')), 'hex'), 32),
  CASE WHEN octet_length(payload) < {payload} THEN payload
       ELSE json_build_array(%(id)s::text)::text END)
FROM stopped
""",
    "mark": """
UPDATE {runs} SET status = 'cancelling', kind = %(kind)s::text, message = %(message)s::text
WHERE id = %(id)s::text AND status = 'running'
""",
    # Only over a record of this worker's, or where there is none (as END in Redis).
    "end": """
INSERT INTO {runs} AS r (id, owner, worker, status, kind, message, ended)
VALUES (%(id)s::text, '', %(worker)s::text, %(status)s::text, %(kind)s::text,
        %(message)s::text, %(at)s::float8)
ON CONFLICT (id) DO UPDATE SET status = excluded.status, kind = excluded.kind,
  message = excluded.message, ended = excluded.ended
WHERE r.worker = excluded.worker
""",
    "tombstones": """
SELECT id, kind, message FROM {runs}
WHERE id = ANY(%s::text[]) AND status IN ('cancelling', 'cancelled') AND kind IS NOT NULL
""",
    # Whether the lease was still held: the row is there (a reaper settles the runs
    # and deletes the row at once, so an expired row not yet reaped still holds them).
    "renew": """
WITH held AS (
  UPDATE {workers} SET lease_until = now() + make_interval(secs => %(lease)s::float8)
  WHERE worker = %(worker)s::text RETURNING 1),
taken AS (
  INSERT INTO {workers} (worker, lease_until)
  SELECT %(worker)s::text, now() + make_interval(secs => %(lease)s::float8)
  WHERE NOT EXISTS (SELECT 1 FROM held)
  ON CONFLICT (worker) DO UPDATE SET lease_until = excluded.lease_until)
SELECT EXISTS (SELECT 1 FROM held)
""",
    # A clean close: runs still here (stragglers past the shutdown's grace) will write
    # no ending, so they are settled now, as a crash's would be by the lease.
    "leave": """
WITH gone AS (DELETE FROM {workers} WHERE worker = %(worker)s::text)
UPDATE {runs} AS r SET {settle}
WHERE r.worker = %(worker)s::text AND r.status IN ('running', 'cancelling')
""",
    # As REAP in Redis; then forget what is older than the history.
    "reap": """
WITH dead AS (DELETE FROM {workers} WHERE lease_until < now() RETURNING worker),
settled AS (
  UPDATE {runs} AS r SET {settle}
  FROM dead WHERE r.worker = dead.worker AND r.status IN ('running', 'cancelling')
  RETURNING 1),
forgotten AS (
  DELETE FROM {runs} WHERE ended < %(now)s::float8 - %(history)s::float8
    AND status NOT IN ('running', 'cancelling')),
expired AS (DELETE FROM {prestops} WHERE expires <= now())
SELECT count(*) FROM settled
""",
    # Writes again the rows that are gone; answers the ids another process settled.
    "reclaim": """
WITH ours AS (
  SELECT u.id, u.owner FROM unnest(%(ids)s::text[], %(owners)s::text[]) AS u(id, owner)),
written AS (
  INSERT INTO {runs} (id, owner, worker, status, started)
  SELECT id, owner, %(worker)s::text, 'running', %(now)s::float8 FROM ours
  ON CONFLICT (id) DO NOTHING)
SELECT r.id FROM {runs} AS r JOIN ours USING (id)
WHERE r.status NOT IN ('running', 'cancelling')
""",
    "info": "SELECT owner, worker, status, kind, message, started, ended FROM {runs} WHERE id = %s",
}
_FIELDS = ("owner", "worker", "status", "kind", "message", "started", "ended")


def _channel_of(worker: str) -> str:
    """The wake-up channel of the process named ``worker`` (see the module's docstring)."""
    return _CHANNEL + hashlib.sha256(worker.encode()).hexdigest()[:32]


class PostgresBackend(BackendBase):
    """Stop any process's run through PostgreSQL; see :class:`cancelkit.RunsBackend`.

    The tables are created on open if missing (see the module's docstring), in the
    first schema of the connection's ``search_path``.

    Args:
        dsn: a libpq connection string (``"host=/run/pg dbname=app"``, a URL, ...).
        prefix: put before the tables' names, to keep several services apart in one
            database; at most 40 bytes.
        backstop, lease, history, timeout: see :class:`BackendBase`.
        max_size: the most pooled connections (the listener has one more of its own).

    Example::

        async with Runs(backend=PostgresBackend("host=/run/postgresql dbname=app")) as runs:
            run = runs.start(work, owner=user_id)
            ...  # any process: await runs.stop(run_id, owner=user_id)
    """

    service = "PostgreSQL"

    def __init__(
        self,
        dsn: str,
        *,
        prefix: str = "cancelkit_",
        backstop: float = 1.0,
        lease: float = 10.0,
        history: float = 24 * 3600.0,
        timeout: float = 5.0,
        max_size: int = 5,
    ) -> None:
        super().__init__(backstop=backstop, lease=lease, history=history, timeout=timeout)
        if not isinstance(dsn, str) or not dsn.strip():
            raise ValueError("PostgresBackend needs a connection string, e.g. 'dbname=app'")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if len(prefix.encode()) > _MAX_PREFIX or "\x00" in prefix:
            raise ValueError(f"prefix must be at most {_MAX_PREFIX} bytes, with no NUL")
        size = positive_int(max_size, "max_size")
        assert size is not None
        psycopg = require("psycopg", "postgres", "PostgresBackend")
        pool = require("psycopg_pool", "postgres", "PostgresBackend")
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"PostgresBackend: not a connection string: {exc}") from None
        self.dsn = dsn
        self.prefix = prefix
        self.max_size = size
        self.unreachable = (psycopg.OperationalError, pool.PoolTimeout, OSError)
        names = {"runs": "shared_runs", "prestops": "prestops", "workers": "workers"}
        names |= {f"{key}_{what}": f"{names[key]}_{what}" for key, what in _INDEXES}
        self._tables = [prefix + names[key] for key in ("runs", "prestops", "workers")]
        place = {key: psycopg.sql.Identifier(prefix + name) for key, name in names.items()}
        place |= {"channel": psycopg.sql.SQL(_CHANNEL), "payload": psycopg.sql.SQL(str(_PAYLOAD))}
        place["settle"] = psycopg.sql.SQL(_SETTLE)
        self._sql: dict[str, Composed] = {
            key: psycopg.sql.SQL(text).format(**place) for key, text in _SQL.items()
        }
        self._pool: AsyncConnectionPool[Any] | None = None
        # Leaving settles the runs still here; a keeper round under way meanwhile must
        # neither take the lease again nor report those runs as lost to others.
        self._lease_lock = asyncio.Lock()
        self._left = False

    def __repr__(self) -> str:
        return f"<PostgresBackend prefix={self.prefix!r} worker={self.worker!r}>"

    @property
    def channel(self) -> str:
        """The channel this process listens on for its runs' Stops."""
        return _channel_of(self.worker)

    def _connection_options(self, *, listener: bool = False) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - optional

        options: dict[str, Any] = {"autocommit": True, "connect_timeout": _whole(self.timeout)}
        if listener:  # a dead peer must end the listen, not hold it silently (TCP only)
            given = conninfo_to_dict(self.dsn)
            every = _whole(self.lease / 3)
            keepalive = {"keepalives": 1, "keepalives_idle": every}
            keepalive |= {"keepalives_interval": every, "keepalives_count": 3}
            options |= {key: value for key, value in keepalive.items() if key not in given}
        return options

    async def _connect(self) -> None:
        from psycopg import AsyncConnection  # noqa: PLC0415 - optional
        from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

        self._left = False

        # One plain connection first: a database that is down fails here at once,
        # where the pool would retry until its timeout.
        async with await AsyncConnection.connect(self.dsn, **self._connection_options()) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = ANY(%s)"
                " AND relkind = 'r' AND pg_catalog.pg_table_is_visible(oid)",
                (self._tables,),
            )
            found = await cursor.fetchone()
            if found is None or found[0] < len(self._tables):
                async with conn.transaction():  # processes starting together: one at a time
                    await conn.execute(self._sql["lock"], (f"cancelkit tables {self.prefix}",))
                    await conn.execute(self._sql["tables"])
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.max_size,
            kwargs=self._connection_options(),
            open=False,
            timeout=self.timeout,
            check=AsyncConnectionPool.check_connection,  # none left dead by a restart
            name=f"cancelkit backend {self.prefix}",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=self.timeout)

    async def _run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]], name: str) -> T:
        """``work`` on a pooled connection, in a task of its own (as ``PostgresStore``).

        The caller waits shielded, and gets its cancellation once the work is over:
        a decision is never cut half-way, and its answer is never lost. It also keeps
        the caller out of the pool's wait for a connection, where Python 3.11's
        ``asyncio.wait_for`` can swallow a cancellation that lands as the connection
        is handed over (the task would then never stop). A connection left in an
        unknown state (the work timed out) is closed, never reused.
        """
        from psycopg import Error  # noqa: PLC0415 - optional

        pool = self._pool
        if pool is None:
            raise RuntimeError("the PostgresBackend is not open")

        async def owned() -> T:
            async with pool.connection() as conn:
                try:
                    return await work(conn)
                except Error:
                    raise  # the state is known: the pool takes it back, or drops it
                except BaseException:
                    if not conn.closed:
                        await conn.close()
                    raise

        return await run_shielded(owned(), name=f"cancelkit backend {name}", timeout=self.timeout)

    async def _decide(self, key: str, run_id: str, params: dict[str, Any]) -> Any:
        """One decision about ``run_id``: under its lock, in one transaction (one
        pipelined round trip, and the commit); the first row of its answer."""

        async def decide(conn: AsyncConnection[Any]) -> Any:
            async with conn.pipeline():
                async with conn.transaction():
                    await conn.execute(self._sql["lock"], (f"{self.prefix} {run_id}",))
                    cursor = await conn.execute(self._sql[key], params)
                return await cursor.fetchone()

        return await self._run(decide, key)

    async def _execute(self, key: str, params: Any) -> list[tuple[Any, ...]]:
        async def execute(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(self._sql[key], params)
            return await cursor.fetchall() if cursor.description else []

        return await self._run(execute, key)

    async def _listen(
        self, deliver: Callable[[str, CancelReason], None], subscribed: Callable[[], None]
    ) -> None:
        from psycopg import AsyncConnection, Error, OperationalError, sql  # noqa: PLC0415

        options = self._connection_options(listener=True)
        try:
            async with await AsyncConnection.connect(self.dsn, **options) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                subscribed()
                while True:  # each wait is bounded: a closed connection is noticed
                    async with contextlib.aclosing(conn.notifies(timeout=self.backstop)) as notes:
                        async for note in notes:
                            await self._woken(note.payload, deliver)
        except OperationalError:
            raise
        except Error as exc:  # whatever broke the listen, listen again (BackendBase)
            raise OperationalError(f"the listening connection failed: {exc!r}") from exc

    async def _woken(self, payload: str, deliver: Callable[[str, CancelReason], None]) -> None:
        try:
            run_id, *reason = json.loads(payload)
        except (ValueError, TypeError):
            return  # not ours
        if reason:
            deliver(str(run_id), load_reason(json.dumps(reason)))
        else:  # the reason was too long for the payload: read it
            for found, stored in (await self._tombstones([str(run_id)])).items():
                deliver(found, stored)

    async def _write(self, batch: list[Ending]) -> None:
        async def write(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.pipeline():
                for ending in batch:
                    reason = ending.reason
                    params: dict[str, Any] = {
                        "id": ending.run_id,
                        "kind": reason.kind if reason else None,
                        "message": _text(reason.message) if reason else None,
                    }
                    if ending.status is None:
                        await conn.execute(self._sql["mark"], params)
                    else:
                        params |= {"status": ending.status, "worker": self.worker}
                        await conn.execute(self._sql["end"], params | {"at": ending.at})

        await self._run(write, "write")

    async def _tombstones(self, run_ids: list[str]) -> dict[str, CancelReason]:
        ids = [run_id for run_id in run_ids if "\x00" not in run_id]
        if not ids:
            return {}
        rows = await self._execute("tombstones", (ids,))
        return {run_id: _reason(kind, message) for run_id, kind, message in rows}

    async def _renew(self, *, leaving: bool = False) -> bool:
        async with self._lease_lock:
            if leaving:
                why = " closed while it ran"
                params = {"worker": self.worker, "now": time.time(), "why": why}
                await self._execute("leave", params)
                self._left = True
                return False
            if self._left:
                return True
            rows = await self._execute("renew", {"worker": self.worker, "lease": self.lease})
            return bool(rows[0][0])

    async def _reap(self) -> int:
        params = {"now": time.time(), "history": self.history, "why": " stopped (lease expired)"}
        rows = await self._execute("reap", params)
        return int(rows[0][0])

    async def _reclaim(self, runs: dict[str, str]) -> list[str]:
        async with self._lease_lock:
            if self._left:
                return []
            params = {"worker": self.worker, "now": time.time(), "ids": list(runs)}
            rows = await self._execute("reclaim", params | {"owners": list(runs.values())})
            return [run_id for (run_id,) in rows]

    async def _register(self, run_id: str, owner: str) -> tuple[bool, CancelReason | None]:
        if "\x00" in run_id or "\x00" in owner:
            raise ValueError("with PostgresBackend, run ids and owners cannot contain NUL")
        params = {"id": run_id, "owner": owner, "worker": self.worker, "now": time.time()}
        row = await self._decide("register", run_id, params)
        if row is None:
            return False, None
        kind, message = row
        return True, (_reason(kind, message) if kind else None)

    async def _cancel(self, run_id: str, reason: CancelReason, owner: str) -> bool:
        if "\x00" in run_id or "\x00" in owner:
            return False  # no run can have it
        params: dict[str, Any] = {"id": run_id, "owner": owner, "kind": reason.kind}
        params |= {"message": _text(reason.message), "history": self.history}
        return await self._decide("cancel", run_id, params) is not None

    async def _info(self, run_id: str) -> dict[str, Any] | None:
        if "\x00" in run_id:
            return None
        rows = await self._execute("info", (run_id,))
        if not rows:
            return None
        record = dict(zip(_FIELDS, rows[0], strict=True))
        for key in ("started", "ended"):
            record[key] = repr(record[key]) if record[key] is not None else None
        return record


def _whole(seconds: float) -> int:
    """libpq takes whole seconds (and at least 2 for ``connect_timeout``)."""
    return max(2, round(seconds))


def _text(message: str) -> str:
    """PostgreSQL's text holds no NUL character."""
    return message.replace("\x00", "\ufffd")


def _reason(kind: str, message: str | None) -> CancelReason:
    return load_reason(json.dumps([kind, message or ""]))

"""``PostgresBackend``: Stops between registries and processes, on a real PostgreSQL.

Each test has tables of its own (a fresh prefix) in the session's PostgreSQL, and tags
its connections (``application_name``) so that its teardown can check that none
outlives it. Two registries in one process stand for two workers; two tests start a
real second process. psycopg is asyncio-only: one test asserts trio gets a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cancelkit import BackendUnavailable, CancelReason, Runs
from cancelkit._lifetime import FolderWatchdog
from cancelkit.distributed import PostgresBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from cancelkit import RunInfo

T = TypeVar("T")

STOP = CancelReason("user", "pressed Stop")


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's pool is asyncio-only."""
    return "asyncio"


@dataclass(frozen=True)
class Tables:
    """Where one test's backends meet: the DSN (tagged) and the tables' prefix."""

    dsn: str
    prefix: str
    tag: str

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(f"{self.prefix}{name}")

    def registry(self, dsn: str | None = None, **options: Any) -> Runs:
        return Runs(backend=PostgresBackend(dsn or self.dsn, prefix=self.prefix, **options))


@pytest.fixture
def tables(postgres_dsn: str, request: pytest.FixtureRequest) -> Iterator[Tables]:
    """A fresh prefix; afterwards, no connection of the test may be left, and the
    tables are dropped."""
    start = getattr(request, "param", "ck")
    tag = f"ck-test-{secrets.token_hex(4)}"
    made = Tables(f"{postgres_dsn} application_name={tag}", f"{start}{secrets.token_hex(4)}_", tag)
    yield made
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while True:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            row = conn.execute(query, (tag,)).fetchone()
            if row is not None and row[0] == 0:
                break
            assert time.monotonic() < deadline, f"{row} connections outlived the test"
            time.sleep(0.05)
        for name in ("shared_runs", "prestops", "workers"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(made.table(name)))


def backend_of(runs: Runs) -> PostgresBackend:
    assert isinstance(runs.backend, PostgresBackend)
    return runs.backend


async def execute(
    dsn: str, query: sql.SQL | sql.Composed, params: Any = ()
) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


async def eventually(probe: Callable[[], Awaitable[T | None]], limit: float = 30.0) -> T:
    """Poll ``probe`` until it answers (not ``None``); fail after ``limit`` seconds."""
    with anyio.fail_after(limit):
        while True:
            found = await probe()
            if found is not None:
                return found
            await anyio.sleep(0.05)


async def info_when(runs: Runs, run_id: str, status: str, owner: str | None = None) -> RunInfo:
    """``runs.find(run_id)`` once the shared record says ``status``."""

    async def probe() -> RunInfo | None:
        info = await runs.find(run_id, owner)
        return info if info is not None and info.status == status else None

    return await eventually(probe)


class Holder:
    """Hands out runs that hold until cancelled, and tells when each one began."""

    def __init__(self) -> None:
        self.began: dict[str, anyio.Event] = {}
        self.called: list[str] = []

    async def hold(self, name: str) -> None:
        self.called.append(name)
        self.began.setdefault(name, anyio.Event()).set()
        await anyio.sleep(3600)

    async def finish(self, name: str) -> str:
        self.called.append(name)
        return name

    async def started(self, name: str) -> None:
        with anyio.fail_after(30):
            await self.began.setdefault(name, anyio.Event()).wait()


# -- two registries ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stop_through_the_other_registry_lands(tables: Tables) -> None:
    holder = Holder()
    # A backstop longer than the test: only the wake-up can deliver the Stop.
    async with tables.registry(backstop=60.0) as here, tables.registry() as there:
        run = here.start(holder.hold, "r1", run_id="r1", owner="alice")
        await holder.started("r1")
        assert await there.stop("r1", STOP, owner="alice") is True
        with anyio.fail_after(30):
            outcome = await run.wait()
        assert (outcome.status, run.reason) == ("cancelled", STOP)
        assert backend_of(here).stats["by_message"] == 1
        theirs = await info_when(there, "r1", "cancelled", owner="alice")
        mine = await here.find("r1", owner="alice")
        assert mine is not None
        for info in (mine, theirs):
            assert (info.status, info.reason, info.owner) == ("cancelled", STOP, "alice")
            assert info.worker == backend_of(here).worker
        assert theirs.ended_at is not None
        assert await there.stop("r1", owner="alice") is False  # first reason won; ended


@pytest.mark.anyio
async def test_a_reason_too_long_for_a_wake_up_is_read_back(tables: Tables) -> None:
    holder = Holder()
    long = CancelReason("user", "why " * 3000)  # a NOTIFY payload holds < 8000 bytes
    async with tables.registry(backstop=60.0) as here, tables.registry() as there:
        run = here.start(holder.hold, "t1", run_id="t1")
        await holder.started("t1")
        assert await there.stop("t1", long) is True
        with anyio.fail_after(30):
            await run.wait()
        assert run.reason == long
        assert backend_of(here).stats["by_message"] == 1


@pytest.mark.anyio
async def test_what_postgres_cannot_hold_is_refused_clearly(tables: Tables) -> None:
    holder = Holder()
    async with tables.registry() as here, tables.registry() as there:
        run = here.start(holder.finish, "n1", run_id="n\x001")
        outcome = await run.wait()
        assert outcome.status == "failed"
        assert isinstance(outcome.error, ValueError)
        assert "NUL" in str(outcome.error)
        assert holder.called == []
        assert await there.stop("n\x001", STOP) is False
        assert await there.find("n\x001") is None
        # A NUL in a reason's message is kept as U+FFFD, not refused.
        other = here.start(holder.hold, "n2", run_id="n2")
        await holder.started("n2")
        assert await there.stop("n2", CancelReason("user", "a\x00b")) is True
        await other.wait()
        assert other.reason == CancelReason("user", "a\ufffdb")


@pytest.mark.anyio
async def test_someone_elses_run_is_indistinguishable_from_an_unknown_one(
    tables: Tables,
) -> None:
    holder = Holder()
    async with tables.registry() as here, tables.registry() as there:
        run = here.start(holder.hold, "o1", run_id="o1", owner="alice")
        await holder.started("o1")
        assert await there.stop("o1", STOP, owner="mallory") is False
        assert await there.stop("never-used", STOP, owner="mallory") is False
        assert await there.find("o1", owner="mallory") is None
        assert await there.find("never-used", owner="mallory") is None
        assert await there.find("never-used") is None
        seen = await there.find("o1", owner="alice")
        assert seen is not None
        assert (seen.status, seen.reason) == ("running", None)
        assert run.status == "running"
        kept = sql.SQL("SELECT count(*) FROM {} WHERE id = 'o1'").format(tables.table("prestops"))
        assert await execute(tables.dsn, kept) == [(0,)]  # a run has the id: nothing kept
        run.cancel()
        await run.wait()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stop_owner", "run_owner", "wins"),
    [
        ("alice", "alice", True),
        (None, "alice", True),  # a Stop with no owner check
        ("bob", "alice", False),
        ("bob", None, False),  # as for a running run with no owner: bob may not stop it
        (None, None, True),
    ],
)
async def test_a_stop_sent_before_the_run_starts_wins(
    tables: Tables, stop_owner: str | None, run_owner: str | None, wins: bool
) -> None:
    holder = Holder()
    early = CancelReason("user", "stopped before it began")
    async with tables.registry() as here, tables.registry() as there:
        assert await there.stop("e1", early, owner=stop_owner) is False  # nothing ran yet
        run = here.start(holder.finish, "e1", run_id="e1", owner=run_owner)
        with anyio.fail_after(30):
            outcome = await run.wait()
        if wins:
            assert (outcome.status, run.reason, holder.called) == ("cancelled", early, [])
            seen = await info_when(there, "e1", "cancelled")
            assert seen.reason == early
        else:
            assert (outcome.status, holder.called) == ("completed", ["e1"])
            await info_when(there, "e1", "completed")


@pytest.mark.anyio
async def test_a_late_stop_is_refused_and_the_id_is_never_reused(tables: Tables) -> None:
    holder = Holder()
    async with tables.registry() as here, tables.registry() as there:
        first = here.start(holder.finish, "first", run_id="l1", owner="alice")
        assert (await first.wait()).status == "completed"
        await info_when(there, "l1", "completed", owner="alice")
        assert await there.stop("l1", STOP, owner="alice") is False
        assert await here.stop("l1", STOP, owner="alice") is False
        again = there.start(holder.finish, "again", run_id="l1", owner="alice")
        with anyio.fail_after(30):
            outcome = await again.wait()
        assert outcome.status == "failed"
        assert isinstance(outcome.error, ValueError)
        assert "never reused" in str(outcome.error)
        assert holder.called == ["first"]
        record = await backend_of(there).info("l1", "alice")  # the shared record, untouched
        assert record is not None
        assert (record.status, record.worker) == ("completed", backend_of(here).worker)


@pytest.mark.anyio
async def test_a_lost_wake_up_is_caught_by_the_backstop(tables: Tables) -> None:
    holder = Holder()
    backstop = 0.5
    async with tables.registry(backstop=backstop) as here:
        run = here.start(holder.hold, "w1", run_id="w1")
        await holder.started("w1")
        # The tombstone as a Stop writes it, and no wake-up at all.
        tombstone = sql.SQL(
            "UPDATE {} SET status = 'cancelling', kind = 'user', message = 'no wake-up'"
            " WHERE id = 'w1'"
        ).format(tables.table("shared_runs"))
        await execute(tables.dsn, tombstone)
        with anyio.fail_after(backstop + 15):  # the bound, with room for a busy machine
            await run.wait()
        assert (run.status, run.reason) == ("cancelled", CancelReason("user", "no wake-up"))
        stats = backend_of(here).stats
        assert (stats["by_backstop"], stats["by_message"]) == (1, 0)


@pytest.mark.anyio
async def test_a_dropped_listener_loses_no_stop(tables: Tables) -> None:
    holder = Holder()
    backstop = 1.0
    async with tables.registry(backstop=backstop) as here, tables.registry() as there:
        backend = backend_of(here)
        listening = sql.SQL(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'"
            " AND position({} IN query) > 0"
        ).format(sql.Literal(backend.channel))

        async def listener() -> int | None:
            rows = await execute(tables.dsn, listening)
            return int(rows[0][0]) if rows else None

        run = here.start(holder.hold, "d1", run_id="d1", owner="alice")
        await holder.started("d1")
        pid = await eventually(listener)
        ended = await execute(tables.dsn, sql.SQL("SELECT pg_terminate_backend(%s)"), (pid,))
        assert ended == [(True,)]
        assert await there.stop("d1", STOP, owner="alice") is True
        with anyio.fail_after(backstop + 15):
            await run.wait()
        assert (run.status, run.reason) == ("cancelled", STOP)
        stats = backend.stats
        assert stats["delivered"] == 1
        assert stats["by_backstop"] == 1 or stats["reconnects"] >= 1
        await eventually(lambda: _other_than(listener, pid))  # and it listens again


async def _other_than(probe: Callable[[], Awaitable[int | None]], old: int) -> int | None:
    found = await probe()
    return found if found not in (None, old) else None


@pytest.mark.anyio
async def test_runs_settled_after_a_lapsed_lease_end_in_their_process_too(
    tables: Tables,
) -> None:
    holder = Holder()
    async with tables.registry(backstop=0.5) as here, tables.registry() as there:
        run = here.start(holder.hold, "x1", run_id="x1", owner="alice")
        await holder.started("x1")
        lapse = sql.SQL(
            "UPDATE {} SET lease_until = now() - interval '1 second' WHERE worker = %s"
        ).format(tables.table("workers"))
        reaped = 0
        for _ in range(5):  # its keeper may renew the lease between the two: lapse it again
            await execute(tables.dsn, lapse, (backend_of(here).worker,))  # a long pause
            reaped = await backend_of(there)._reap()
            if reaped:
                break
        assert reaped == 1
        settled = await there.find("x1", owner="alice")
        assert settled is not None
        assert settled.status == "cancelled"
        with anyio.fail_after(15):  # noticed at the next renewal or re-read
            await run.wait()
        assert run.status == "cancelled"
        assert run.reason is not None
        assert run.reason.kind == "shutdown"


@pytest.mark.anyio
async def test_a_clean_close_settles_the_runs_left_behind(tables: Tables) -> None:
    class Nowhere:
        def active_ids(self) -> list[str]:
            return []

        def cancel_here(self, run_id: str, reason: CancelReason) -> bool:
            return False

    backend = PostgresBackend(tables.dsn, prefix=tables.prefix)
    await backend.open(Nowhere())
    assert await backend.register("s1", "alice") is None  # claimed; it never ends
    await backend.aclose()
    async with tables.registry() as there:
        seen = await there.find("s1", owner="alice")
    assert seen is not None
    assert seen.status == "cancelled"
    assert seen.reason is not None
    assert seen.reason.kind == "shutdown"
    assert "closed while it ran" in seen.reason.message


@pytest.mark.anyio
@pytest.mark.parametrize("tables", ["Odd:Prefix-"], indirect=True)
async def test_history_and_kept_stops_expire(tables: Tables) -> None:
    holder = Holder()
    async with tables.registry(history=1.0) as here, tables.registry(history=1.0) as there:
        assert (await here.start(holder.finish, "h1", run_id="h1").wait()).status == "completed"
        await info_when(there, "h1", "completed")
        assert await there.stop("h2", STOP, owner="alice") is False  # kept, for 1 s
        backend = backend_of(here)
        kept = sql.SQL("SELECT count(*) FROM {}").format(tables.table("prestops"))

        async def forgotten() -> bool | None:
            await backend._reap()
            gone = await backend.info("h1", None) is None
            return True if gone and await execute(tables.dsn, kept) == [(0,)] else None

        await eventually(forgotten)
        for run_id in ("h1", "h2"):  # both ids are free again, and no Stop waits
            run = there.start(holder.finish, run_id, run_id=run_id, owner="alice")
            assert (await run.wait()).status == "completed"


# -- another process -----------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import asyncio, contextlib, ctypes, json, signal, sys

    from cancelkit import Runs
    from cancelkit.distributed import PostgresBackend

    def say(**event):
        print(json.dumps(event), flush=True)

    async def main(dsn, prefix, ids):
        backend = PostgresBackend(dsn, prefix=prefix, lease=3.0, backstop=0.5)
        async with Runs(backend=backend) as runs:
            async def hold(run_id):
                say(event="began", id=run_id)
                await asyncio.sleep(3600)

            def ended(run):
                reason = [run.reason.kind, run.reason.message] if run.reason else None
                say(event="ended", id=run.id, status=run.status, reason=reason)

            for run_id in ids:
                runs.start(hold, run_id, run_id=run_id, owner="alice").add_done_callback(ended)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        say(event="closed")

    with contextlib.suppress(OSError, AttributeError):  # killed with the test (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
    """
)


class Elsewhere:
    """A process holding runs (owner ``alice``) on the test's tables, until told."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    async def event(self, name: str, run_id: str | None = None) -> dict[str, Any]:
        """The first event ``name`` (for ``run_id``), seen or to come."""
        assert self.process.stdout is not None
        with anyio.fail_after(60):
            while True:
                for event in self.events:
                    if event["event"] == name and event.get("id") == run_id:
                        return event
                line = await self.process.stdout.readline()
                assert line, f"the process ended; its events: {self.events}"
                self.events.append(json.loads(line))

    async def quit(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(b"quit\n")
        await self.event("closed")
        with anyio.fail_after(30):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def elsewhere(tables: Tables, *run_ids: str) -> AsyncIterator[Elsewhere]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        tables.dsn,
        tables.prefix,
        *run_ids,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Elsewhere(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_stop_reaches_a_run_in_another_process(tables: Tables) -> None:
    reason = CancelReason("user", "from the test's process")
    async with elsewhere(tables, "p1") as other, tables.registry() as here:
        await other.event("began", "p1")
        assert await here.stop("p1", reason, owner="alice") is True
        ended = await other.event("ended", "p1")
        assert (ended["status"], ended["reason"]) == ("cancelled", ["user", reason.message])
        seen = await info_when(here, "p1", "cancelled", owner="alice")
        assert seen.reason == reason
        assert seen.worker != backend_of(here).worker
        assert await here.stop("p1", reason, owner="alice") is False
        assert await other.quit() == 0


@pytest.mark.anyio
@pytest.mark.slow
async def test_the_runs_of_a_killed_process_are_settled_by_its_lease(tables: Tables) -> None:
    async with elsewhere(tables, "k1", "k2") as other:
        await other.event("began", "k1")
        await other.event("began", "k2")
        async with tables.registry(lease=3.0, backstop=0.5) as here:
            assert (await here.find("k1", owner="alice") or _never()).status == "running"
            other.process.send_signal(signal.SIGKILL)
            await other.process.wait()
            for run_id in ("k1", "k2"):
                seen = await info_when(here, run_id, "cancelled", owner="alice")
                assert seen.reason is not None
                assert seen.reason.kind == "shutdown"
                assert "lease expired" in seen.reason.message
                assert await here.stop(run_id, STOP, owner="alice") is False


def _never() -> RunInfo:
    raise AssertionError("the other process's run is not in the database")


# -- the database down ---------------------------------------------------------------


@pytest.mark.anyio
async def test_opening_with_the_database_down_is_backend_unavailable(tables: Tables) -> None:
    nowhere = f"host=/nonexistent-{secrets.token_hex(4)} dbname=postgres user=cancelkit"
    with pytest.raises(BackendUnavailable, match="PostgreSQL"):
        async with tables.registry(nowhere, timeout=2.0):
            pass


class Relay:
    """A unix socket in front of the session's PostgreSQL, to take it away and back.

    Its links are never cancelled (asyncio 3.11 logs a cancelled connection handler
    as an error): taking it away closes their sockets, and they end on their own.
    """

    def __init__(self, postgres_dsn: str) -> None:
        self.target = f"{conninfo_to_dict(postgres_dsn)['host']}/.s.PGSQL.5432"
        # In /tmp, not the test's own folder: a unix socket's path is short.
        self.directory = tempfile.mkdtemp(prefix="ck-relay-")
        self.folder = FolderWatchdog(Path(self.directory))  # gone even with a killed session
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        path = f"{self.directory}/.s.PGSQL.5432"
        self._server = await asyncio.start_unix_server(self._link, path)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in self._writers:
            writer.close()
        if self._links:
            _, pending = await asyncio.wait(set(self._links), timeout=10)
            assert not pending, "a relay link did not end"

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        try:
            pumps = (_pump(reader, up_writer), _pump(up_reader, writer))
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for end in (writer, up_writer):
                end.close()
                self._writers.discard(end)
            self._links.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.mark.anyio
async def test_stops_while_the_database_is_down(tables: Tables, postgres_dsn: str) -> None:
    holder = Holder()
    relay = Relay(postgres_dsn)
    through = f"host={relay.directory} dbname=postgres user=cancelkit application_name={tables.tag}"
    try:
        await relay.start()
        async with (
            tables.registry(through, timeout=1.0, backstop=0.2) as here,
            tables.registry() as there,
        ):
            run = here.start(holder.hold, "u1", run_id="u1", owner="alice")
            await holder.started("u1")
            await info_when(there, "u1", "running")
            await relay.stop()
            with pytest.raises(BackendUnavailable):
                await here.stop("elsewhere", STOP, owner="alice")
            with pytest.raises(BackendUnavailable):
                await here.find("elsewhere", owner="alice")
            assert await here.stop("u1", STOP, owner="alice") is True  # its own: no trip
            assert (await run.wait()).status == "cancelled"
            await relay.start()  # back: the endings kept meanwhile are written
            seen = await info_when(there, "u1", "cancelled", owner="alice")
            assert seen.reason == STOP

            async def connected() -> bool | None:
                return True if backend_of(here).connected else None

            # A call begun during the outage may still time out after this one: the
            # newest answer decides, and one comes within a backstop period.
            await eventually(connected)
    finally:
        await relay.stop()
        relay.folder.release()


@pytest.mark.anyio
async def test_a_late_answer_to_an_older_call_does_not_change_whether_it_is_connected() -> None:
    # Calls overlap. One begun in an outage can fail after a later one found the service
    # back (CI saw ``connected`` False after the endings were written); and a slow
    # success begun before a failure must not hide the failure.
    backend = PostgresBackend("host=/nonexistent dbname=postgres")
    release = asyncio.Event()

    async def answer(late: bool, *, ok: bool) -> str:
        if late:
            await release.wait()
        if not ok:
            raise OSError("connection refused")
        return "answer"

    async def overlapping(*, older_ok: bool) -> None:
        release.clear()
        older = asyncio.ensure_future(backend._round_trip(answer(True, ok=older_ok)))
        await asyncio.sleep(0)  # the older call has begun
        if older_ok:
            with pytest.raises(BackendUnavailable):
                await backend._round_trip(answer(False, ok=False))
        else:
            assert await backend._round_trip(answer(False, ok=True)) == "answer"
        newer = backend.connected
        release.set()
        with contextlib.suppress(BackendUnavailable):
            await older
        assert backend.connected is newer is not older_ok

    await overlapping(older_ok=False)  # up: the old failure is ignored
    await overlapping(older_ok=True)  # down: the old success is ignored
    assert await backend._round_trip(answer(False, ok=True)) == "answer"
    assert backend.connected


# -- what is refused before anything starts ------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_opening_on_trio_is_a_clear_error(anyio_backend: str) -> None:
    backend = PostgresBackend("host=/nonexistent dbname=postgres")
    with pytest.raises(RuntimeError, match="asyncio"):
        async with Runs(backend=backend):
            pass


def test_a_missing_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r'pip install "cancelkit\[postgres\]"'):
        PostgresBackend("dbname=app")


@pytest.mark.parametrize(
    ("dsn", "options", "error"),
    [
        ("", {}, ValueError),
        ("dbname=app", {"prefix": 3}, TypeError),
        ("dbname=app", {"prefix": "x" * 41}, ValueError),
        ("dbname=app", {"prefix": "a\x00b"}, ValueError),
        ("dbname=app", {"max_size": 0}, ValueError),
        ("dbname=app", {"lease": 1.0}, ValueError),
        ("this is not = a connection string", {}, ValueError),
    ],
)
def test_bad_arguments_are_refused_at_once(
    dsn: str, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        PostgresBackend(dsn, **options)

"""What the demo's workers share about a run beyond the registry: its events, its followers.

With several workers (``cancelkit demo --workers N``) a run lives in the worker that
started it, while its events may be followed, and its page closed, through any
other. The registry (``Runs`` with a ``RedisBackend``) answers where a run is, how it
is doing and delivers Stop; this module adds, in the same Redis:

- ``<prefix>events:<run id>``, a Redis Stream of the run's events: the same JSON
  payloads the SSE stream sends (``_events.py``). The worker holding the run appends
  them with ``XADD ... MAXLEN ~ 2000`` (bounded: a long run keeps only its latest
  events; its ``done`` receipt still carries the whole text), and the stream expires
  an hour after the run's end. Writing never slows a run down or breaks it: events
  are queued and one task per process writes them, batched and pipelined, retrying
  while Redis is down (the queue is bounded; beyond it events are dropped, with a
  warning). A follower elsewhere reads the stream from its start (``XREAD BLOCK``,
  one bounded wait at a time) until ``done``.
- ``<prefix>watch:<run id>``, a hash: how many follow the run now, in every worker
  (``n``), and whether the run asked to be stopped when the last one leaves
  (``stop``), so closing the page stops the run whichever worker its stream was on.

Everything here needs asyncio (as ``RedisBackend`` does) and raises
:class:`~cancelkit.BackendUnavailable` when Redis cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio

from .. import BackendUnavailable, Background
from ._events import ENDED, Event, batches, summarize

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable
    from types import TracebackType

    from .. import CancelToken, RunInfo
    from .._tasks import OwnedTask
    from ..agent import AgentRun
    from ..distributed import RedisBackend

__all__ = ("RunFeeds",)

logger = logging.getLogger("cancelkit.demo")

_BATCH = 500
_MAX_QUEUED = 100_000


class RunFeeds:
    """Each run's event stream and follower count, in the registry's Redis.

    Args:
        backend: the workers' shared registry backend; its client, key prefix and
            timeout are used (open it before entering this object).
        live: seconds a running run's keys are kept after their last write (more than
            the longest run: they are refreshed with every batch).
        keep: seconds a run's stream is kept after its ``done`` event.
        maxlen: about how many events one run's stream keeps (its latest).
        block: seconds one ``XREAD`` waits for new events before looking again.
        settle: seconds a follower waits for the ``done`` of a run the registry says
            has ended (its worker may have died) before making one from the record.
    """

    def __init__(
        self,
        backend: RedisBackend,
        *,
        live: float = 3600.0,
        keep: float = 3600.0,
        maxlen: int = 2000,
        block: float = 1.0,
        settle: float = 3.0,
    ) -> None:
        self.backend = backend
        self.live = max(1, round(live))
        self.keep = max(1, round(keep))
        self.maxlen = maxlen
        self.block = block
        self.settle = settle
        self.dropped = 0
        self._queue: deque[tuple[str, str, str]] = deque()  # run id, event name, JSON data
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._background = Background("demo run feeds")
        self._tees: set[OwnedTask[None]] = set()
        self._down = False

    def _key(self, kind: str, run_id: str) -> str:
        return f"{self.backend.prefix}{kind}:{run_id}"

    async def __aenter__(self) -> RunFeeds:
        self._background.spawn(self._writer(), name="demo run feeds writer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait (bounded) for the runs' last events to be written, then stop writing.

        Shut the runs down first: a run that has ended has queued its ``done``.
        """
        deadline = time.monotonic() + self.backend.timeout
        for handle in list(self._tees):
            await handle.wait_shielded(max(0.0, deadline - time.monotonic()))
        with anyio.move_on_after(max(0.0, deadline - time.monotonic()), shield=True):
            await self._idle.wait()
        if self._queue:
            logger.warning(
                "cancelkit demo: %d run events were not written to Redis", len(self._queue)
            )
        await self._background.aclose(grace=self.backend.timeout)

    # -- writing: the worker that holds the run ------------------------------------

    def record(self, run: AgentRun) -> None:
        """Copy a run's events to its stream, from now until its ``done``."""
        handle = self._background.spawn(self._tee(run), name=f"demo feed {run.id}")
        self._tees.add(handle)
        handle.add_done_callback(self._tees.discard)

    async def _tee(self, run: AgentRun) -> None:
        async with contextlib.aclosing(batches(run)) as sent:
            async for batch in sent:
                self._put(run.id, batch)

    def _put(self, run_id: str, batch: list[Event]) -> None:
        for name, data in batch:
            if len(self._queue) >= _MAX_QUEUED:
                self.dropped += 1
                if self.dropped == 1:
                    logger.warning("cancelkit demo: Redis is not keeping up; dropping run events")
                return
            self._queue.append((run_id, name, json.dumps(data)))
        self._idle.clear()
        self._wake.set()

    async def _writer(self) -> None:
        pause = 0.05
        while True:
            if not self._queue:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            if not batch:
                continue
            try:
                await self._call(self._send(batch))
            except BackendUnavailable as exc:
                self._queue.extendleft(reversed(batch))  # kept, in order, for the retry
                if not self._down:
                    self._down = True
                    logger.warning("cancelkit demo: run events wait for Redis: %s", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            except Exception:
                logger.exception("cancelkit demo: Redis refused a batch of run events")
            self._down = False
            pause = 0.05

    async def _send(self, batch: list[tuple[str, str, str]]) -> None:
        ttl: dict[str, int] = {}
        async with self.backend.client.pipeline(transaction=False) as pipe:
            for run_id, name, data in batch:
                key = self._key("events", run_id)
                fields = {"event": name, "data": data}
                pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                ttl[key] = self.keep if name == "done" else self.live
            for key, seconds in ttl.items():
                pipe.expire(key, seconds)
            await pipe.execute()

    # -- reading: any worker ---------------------------------------------------------

    async def events(self, run_id: str) -> list[Event]:
        """The events still in a run's stream, oldest first."""
        found = await self._call(
            self.backend.client.xrange(self._key("events", run_id), count=2 * self.maxlen)
        )
        return [event for _, fields in found or () if (event := _decode(fields)) is not None]

    async def follow(
        self,
        run_id: str,
        info: Callable[[], Awaitable[RunInfo | None]],
        closing: CancelToken,
    ) -> AsyncGenerator[list[Event], None]:
        """A run's events from the start of its stream, until its ``done``: what each
        read brought, in one batch.

        Ends early, without ``done``, when ``closing`` is cancelled (this worker is
        shutting down) or the run is no longer known. A run that ended without its
        ``done`` reaching the stream (its worker died) gets one made from ``info()``,
        the registry's record, after ``settle`` seconds.

        Raises:
            BackendUnavailable: Redis cannot be reached.
        """
        key = self._key("events", run_id)
        last: bytes | str = "0-0"
        seen: list[Event] = []
        quiet_since: float | None = None
        block_ms = max(1, int(self.block * 1000))
        while not closing.cancelled:
            reply = await self._call(
                self.backend.client.xread({key: last}, count=_BATCH, block=block_ms),
                extra=self.block,
            )
            if reply:
                quiet_since = None
                batch: list[Event] = []
                for entry_id, fields in reply[0][1]:
                    last = entry_id
                    event = _decode(fields)
                    if event is not None:
                        batch.append(event)
                        if event[0] == "done":
                            break
                seen += batch
                if batch:
                    yield batch
                if batch and batch[-1][0] == "done":
                    return
                continue
            record = await info()
            if record is not None and record.status not in ENDED:
                quiet_since = None
                continue
            now = time.monotonic()
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= self.settle:
                if record is not None:
                    yield [("done", summarize(record, seen))]
                return

    # -- followers, counted in every worker -------------------------------------------

    async def stop_when_unwatched(self, run_id: str) -> None:
        """The run asks to be stopped when its last follower, anywhere, goes away."""
        await self._call(self._watch(run_id, "stop"))

    async def joined(self, run_id: str) -> None:
        """One more follower of the run."""
        await self._call(self._watch(run_id, "join"))

    async def left(self, run_id: str) -> tuple[int, bool]:
        """One follower fewer: how many are left, and whether the run asked to be
        stopped when none is."""
        answer = await self._call(self._watch(run_id, "leave"))
        return max(0, int(answer[0])), answer[1] in (b"1", "1")

    async def _watch(self, run_id: str, change: str) -> list[Any]:
        key = self._key("watch", run_id)
        async with self.backend.client.pipeline(transaction=False) as pipe:
            if change == "stop":
                pipe.hset(key, "stop", "1")
            else:
                pipe.hincrby(key, "n", 1 if change == "join" else -1)
                if change == "leave":
                    pipe.hget(key, "stop")
            pipe.expire(key, self.live)
            answer: list[Any] = await pipe.execute()
            return answer

    async def followers(self, run_id: str) -> int:
        """How many follow the run now, in every worker."""
        found = await self._call(self.backend.client.hget(self._key("watch", run_id), "n"))
        return max(0, int(found)) if found is not None else 0

    async def _call(self, call: Awaitable[Any], *, extra: float = 0.0) -> Any:
        """Await a Redis call, bounded; "unreachable" becomes ``BackendUnavailable``."""
        try:
            async with asyncio.timeout(self.backend.timeout + extra):
                return await call
        except self.backend.unreachable as exc:
            raise BackendUnavailable(f"Redis cannot be reached: {exc}") from exc
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"Redis did not answer within {self.backend.timeout}s"
            ) from exc


def _decode(fields: dict[Any, Any]) -> Event | None:
    """A stream entry back into an event (``None``: not one of ours)."""
    name, data = fields.get(b"event"), fields.get(b"data")
    if name is None or data is None:
        return None
    try:
        decoded = json.loads(data)
    except ValueError:
        return None
    return (name.decode() if isinstance(name, bytes) else str(name)), decoded

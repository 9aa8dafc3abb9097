"""What every cross-process backend does the same way, whatever it is built on.

A backend (see :class:`cancelkit.RunsBackend`) keeps three tasks for its process, in a
:class:`~cancelkit.Background` the backend owns:

- the **listener** holds one subscription for the whole process (not one per run) and
  delivers each Stop to the local registry. Every time it (re)subscribes it re-reads the
  tombstones of the process's active runs, so a Stop sent while it was disconnected
  lands as soon as it is back;
- the **writer** sends what the runs' endings queued (a local cancel's tombstone, a
  run's final status), in order and in batches; while the service is down it keeps
  them and retries, so nothing is lost;
- the **keeper** renews the process's lease, re-reads the tombstones every
  ``backstop`` seconds (a Stop whose wake-up message was lost lands within that
  bound), and settles the runs of processes whose lease expired.

Subclasses supply the service's side: connecting, one subscription, the batch write,
the tombstone read, the lease and the reaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import secrets
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._background import Background
from .._exceptions import BackendUnavailable, CancelReason
from ..stores._owner import this_process

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._runs_backend import LocalRuns, RunInfo
    from .._tasks import RunStatus

__all__ = ("BackendBase", "Ending", "dump_reason", "load_reason")

logger = logging.getLogger("cancelkit")

MAX_ID_CHARS = 256
_BATCH = 500
_GATHER = 0.002  # seconds the writer waits for more endings before a round trip


def dump_reason(reason: CancelReason) -> str:
    """A reason as the backends store it: ``[kind, message]`` in JSON."""
    return json.dumps([reason.kind, reason.message])


def load_reason(text: str | bytes) -> CancelReason:
    """A reason stored by :func:`dump_reason` (a damaged one reads as kind ``user``)."""
    try:
        kind, message = json.loads(text)
        return CancelReason(kind, str(message))
    except (ValueError, TypeError):
        return CancelReason("user", "stopped through the backend")


@dataclass(frozen=True, slots=True)
class Ending:
    """A queued write: a run cancelled here (``status`` is ``None``), or ended."""

    run_id: str
    status: RunStatus | None
    reason: CancelReason | None
    at: float


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class BackendBase(ABC):
    """The listener, writer and keeper shared by the backends (see the module doc).

    Args:
        backstop: seconds between re-reads of the active runs' tombstones: the
            longest a Stop can take when its wake-up message is lost.
        lease: seconds a process's runs stay ``running`` after it stops renewing
            its lease (a crash); then any other process settles them ``cancelled``
            with kind ``shutdown``. Renewed every third of it.
        history: seconds an ended run (and a tombstone) is remembered.
        timeout: seconds one round trip may take before the service counts as down.
    """

    #: The service's name, in messages.
    service = "the backend"

    def __init__(
        self,
        *,
        backstop: float = 1.0,
        lease: float = 10.0,
        history: float = 24 * 3600.0,
        timeout: float = 5.0,
    ) -> None:
        self.backstop = _positive(backstop, "backstop")
        self.lease = _positive(lease, "lease")
        self.history = _positive(history, "history")
        self.timeout = _positive(timeout, "timeout")
        if self.lease < 3 * self.backstop and self.lease < 3.0:
            raise ValueError("lease must be at least 3 s or three backstop intervals")
        self._worker = f"{this_process()}:{secrets.token_hex(4)}"
        self._local: LocalRuns | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[Ending] = deque()
        self._wake = asyncio.Event()
        self._resync_now = asyncio.Event()
        self._claims: deque[tuple[str, str, asyncio.Future[tuple[bool, CancelReason | None]]]]
        self._claims = deque()
        self._claim_wake = asyncio.Event()
        self._reclaim_now = False
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: Background | None = None
        self._mine: dict[str, str] = {}  # run id -> owner, for the runs claimed here
        self._down_since: float | None = None
        self._up_since = time.monotonic()
        self._tickets = itertools.count(1)  # calls to the service, in the order they began
        self._news = 0  # the ticket of the latest call whose outcome counted
        self.stats = {"delivered": 0, "by_message": 0, "by_backstop": 0, "reconnects": 0}

    @property
    def worker(self) -> str:
        """This process's name in the backend: ``host:pid:start:nonce``."""
        return self._worker

    @property
    def connected(self) -> bool:
        """Whether the service answered the latest call (by when calls began)."""
        return self._down_since is None

    # -- what a subclass supplies -------------------------------------------------

    #: The exceptions that mean "the service cannot be reached".
    unreachable: tuple[type[BaseException], ...] = (OSError,)

    @abstractmethod
    async def _connect(self) -> None:
        """Open the connections (raise one of :attr:`unreachable` if down)."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close every connection."""

    @abstractmethod
    async def _listen(
        self, deliver: Callable[[str, CancelReason], None], subscribed: Callable[[], None]
    ) -> None:
        """Subscribe once, call ``subscribed()``, then ``deliver`` each Stop, until the
        connection fails (raise)."""

    @abstractmethod
    async def _write(self, batch: list[Ending]) -> None:
        """Write queued endings, in order, in as few round trips as the service allows."""

    @abstractmethod
    async def _tombstones(self, run_ids: list[str]) -> dict[str, CancelReason]:
        """The tombstones among ``run_ids``."""

    @abstractmethod
    async def _renew(self, *, leaving: bool = False) -> bool:
        """Renew this process's lease (``leaving``: drop it, on a clean close).

        Returns:
            Whether the lease was still held: ``False`` when it had expired (the
            process was paused or cut off longer than ``lease``).
        """

    @abstractmethod
    async def _reap(self) -> int:
        """Settle the runs of processes whose lease expired; how many."""

    @abstractmethod
    async def _reclaim(self, runs: dict[str, str]) -> list[str]:
        """Write again the records of these running runs (id -> owner) where they are
        missing (the service lost its data: a restart without persistence).

        Returns:
            The ids among them that another process settled meanwhile (this one's
            lease expired while it could not reach the service).
        """

    @abstractmethod
    async def _register(self, run_id: str, owner: str) -> tuple[bool, CancelReason | None]:
        """Claim the id: ``(False, None)`` if used, else ``(True, waiting Stop)``."""

    async def _register_many(
        self, claims: list[tuple[str, str]]
    ) -> list[tuple[bool, CancelReason | None] | BaseException]:
        """Claim several ids (id, owner); each answer as :meth:`_register`'s, or the
        error of that one claim. One by one here; a service with pipelines does better."""
        results: list[tuple[bool, CancelReason | None] | BaseException] = []
        for run_id, owner in claims:
            try:
                results.append(await self._register(run_id, owner))
            except self.unreachable:
                raise
            except Exception as exc:  # noqa: BLE001 - this claim's own error, handed to its caller
                results.append(exc)
        return results

    @abstractmethod
    async def _cancel(self, run_id: str, reason: CancelReason, owner: str) -> bool:
        """The cancel decision, in the service (see :meth:`cancel`)."""

    @abstractmethod
    async def _info(self, run_id: str) -> dict[str, Any] | None:
        """The run's record: ``owner``, ``worker``, ``status``, ``kind``, ``message``,
        ``started``, ``ended`` (strings or ``None``)."""

    # -- the RunsBackend interface -------------------------------------------------

    async def open(self, local: LocalRuns) -> None:
        """Connect, take this process's lease, and start the listener, writer, keeper.

        Raises:
            RuntimeError: not on asyncio (the clients are asyncio-only), or opened twice.
            BackendUnavailable: the service cannot be reached.
        """
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{type(self).__name__} runs on asyncio (its client is asyncio-only)"
            ) from None
        if self._background is not None:
            raise RuntimeError(f"{type(self).__name__} is already open")
        await self._round_trip(self._connect())
        try:
            await self._round_trip(self._renew())
        except BaseException:
            await self._disconnect()
            raise
        self._local = local
        self._closing = False
        self._background = Background(f"{self.service} backend")
        self._background.spawn(self._listener(), name="cancelkit backend listener")
        self._background.spawn(self._writer(), name="cancelkit backend writer")
        self._background.spawn(self._claimer(), name="cancelkit backend claimer")
        self._background.spawn(self._keeper(), name="cancelkit backend keeper")

    async def aclose(self) -> None:
        """Write what is queued (up to ``timeout``), drop the lease, disconnect."""
        background, self._background = self._background, None
        if background is None:
            return
        try:
            with _shielded(self.timeout):
                await self._idle.wait()
        except TimeoutError:
            pass  # what is left is reported below
        # The keeper stops before the lease is dropped, or a round of it under way
        # would take the lease again (and count this process's runs as lost).
        self._closing = True  # the loops end at their next turn, even if a cancel is lost
        self._wake.set()
        self._resync_now.set()
        self._claim_wake.set()
        try:
            await background.aclose(grace=self.timeout)
            if self._pending:
                logger.warning(
                    "cancelkit: %d run endings were not written to %s; its lease will settle them",
                    len(self._pending),
                    self.service,
                )
            else:
                with _shielded(self.timeout):
                    await self._round_trip(self._renew(leaving=True))
        except (BackendUnavailable, TimeoutError) as exc:
            logger.warning(
                "cancelkit: %s backend closed without dropping its lease: %r", self.service, exc
            )
        finally:
            await self._disconnect()

    async def register(self, run_id: str, owner: str | None) -> CancelReason | None:
        """See :meth:`cancelkit.RunsBackend.register`.

        Runs that start together are claimed together: the claimer sends every claim
        waiting at its turn in one round trip (a pipeline, where the service has one).
        """
        if len(run_id) > MAX_ID_CHARS:
            raise ValueError(f"a shared run id has at most {MAX_ID_CHARS} characters")
        assert self._loop is not None
        answer: asyncio.Future[tuple[bool, CancelReason | None]] = self._loop.create_future()
        self._claims.append((run_id, owner or "", answer))
        self._claim_wake.set()
        try:
            # Shielded: once the service may have the run, this process must hear back.
            with _shielded(self.timeout * 2):  # the claimer's round trip is bounded
                fresh, waiting = await answer
        except TimeoutError:
            answer.cancel()
            self._mine[run_id] = owner or ""
            raise BackendUnavailable(f"{self.service} did not claim the run in time") from None
        except BackendUnavailable:
            # The answer may be lost after the service took the run: its ending is
            # still written (only over a record of ours, never another process's).
            self._mine[run_id] = owner or ""
            raise
        if not fresh:
            raise ValueError(f"the run id {run_id!r:.80} was already used; ids are never reused")
        self._mine[run_id] = owner or ""
        return waiting

    async def _claimer(self) -> None:
        while not self._closing:
            if not self._claims:
                await self._claim_wake.wait()
            self._claim_wake.clear()
            batch = [self._claims.popleft() for _ in range(min(_BATCH, len(self._claims)))]
            live = [claim for claim in batch if not claim[2].done()]
            if not live:
                continue
            try:
                results = await self._round_trip(
                    self._register_many([(run_id, owner) for run_id, owner, _ in live])
                )
            except BackendUnavailable as exc:  # one exception each: tracebacks never mix
                results = [_unavailable(exc) for _ in live]
            except Exception as exc:  # noqa: BLE001 - a bug: handed to every caller
                results = [exc] * len(live)
            for (_, _, answer), result in zip(live, results, strict=True):
                if answer.done():
                    continue  # its caller gave up meanwhile
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)

    def note_cancelled(self, run_id: str, reason: CancelReason) -> None:
        """See :meth:`cancelkit.RunsBackend.note_cancelled`."""
        self._enqueue(Ending(run_id, None, reason, time.time()))

    def note_ended(self, run_id: str, status: RunStatus, reason: CancelReason | None) -> None:
        """See :meth:`cancelkit.RunsBackend.note_ended`."""
        self._enqueue(Ending(run_id, status, reason, time.time()))

    async def cancel(self, run_id: str, reason: CancelReason, owner: str | None) -> bool:
        """See :meth:`cancelkit.RunsBackend.cancel`."""
        if len(run_id) > MAX_ID_CHARS or not run_id:
            return False
        stopped: bool = await self._round_trip(self._cancel(run_id, reason, owner or ""))
        return stopped

    async def info(self, run_id: str, owner: str | None) -> RunInfo | None:
        """See :meth:`cancelkit.RunsBackend.info`."""
        from .._runs_backend import RunInfo  # noqa: PLC0415 - a cycle only for typing

        if len(run_id) > MAX_ID_CHARS or not run_id:
            return None
        record = await self._round_trip(self._info(run_id))
        if record is None or (owner is not None and record.get("owner") != owner):
            return None
        kind = record.get("kind")
        reason = CancelReason(kind, record.get("message") or "") if kind else None
        ended = record.get("ended")
        started = record.get("started")
        return RunInfo(
            run_id,
            record["status"],
            reason,
            record.get("owner") or None,
            record.get("worker"),
            float(started) if started else None,
            float(ended) if ended else None,
        )

    # -- the three tasks -------------------------------------------------------------

    def _enqueue(self, ending: Ending) -> None:
        if ending.run_id not in self._mine:
            return  # the id was never claimed here (refused, or the service was down)
        if ending.status is not None:
            self._mine.pop(ending.run_id, None)
        self._pending.append(ending)  # deque.append is atomic: any thread, a signal handler
        self._idle.clear()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: aclose() reported it
                loop.call_soon_threadsafe(self._wake.set)

    def _deliver(self, run_id: str, reason: CancelReason, *, by_message: bool) -> None:
        local = self._local
        if local is not None and local.cancel_here(run_id, reason):
            self.stats["delivered"] += 1
            self.stats["by_message" if by_message else "by_backstop"] += 1

    async def _resync(self) -> None:
        local = self._local
        if local is None:
            return
        ids = local.active_ids()
        for start in range(0, len(ids), _BATCH):
            found = await self._round_trip(self._tombstones(ids[start : start + _BATCH]))
            for run_id, reason in found.items():
                self._deliver(run_id, reason, by_message=False)

    async def _listener(self) -> None:
        # A dropped subscription is subscribed again at once; only when that fails too
        # is the service counted down, and the retries back off.
        failures = 0

        def subscribed() -> None:
            nonlocal failures
            failures = 0
            self._note_up(began)
            self._reclaim_now = True
            self._resync_now.set()  # the keeper re-reads the tombstones at once

        def deliver(run_id: str, reason: CancelReason) -> None:
            self._deliver(run_id, reason, by_message=True)

        while not self._closing:
            began = next(self._tickets)
            try:
                await self._listen(deliver, subscribed)
            except self.unreachable as exc:
                failures += 1
                if failures > 1:
                    self._note_down(exc, began)
            except Exception:  # never stop listening: log, then subscribe again
                failures += 1
                logger.exception("cancelkit: the %s backend's listener failed", self.service)
            self.stats["reconnects"] += 1
            if failures > 1:
                await asyncio.sleep(min(0.05 * 2 ** (failures - 2), self.backstop))

    async def _writer(self) -> None:
        pause = 0.05
        while not self._closing:
            if not self._pending:
                self._idle.set()
                await self._wake.wait()
                # Endings come in bursts (a Stop of many runs, a busy service): gather
                # them a moment, and write them in one round trip.
                await asyncio.sleep(_GATHER)
            self._wake.clear()
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            try:
                await self._round_trip(self._write(batch))
            except BackendUnavailable:
                self._pending.extendleft(reversed(batch))  # kept, in order, for the retry
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.backstop)
                continue
            except Exception:
                logger.exception("cancelkit: %s refused a batch of run endings", self.service)
            pause = 0.05

    async def _keeper(self) -> None:
        renewed = reaped = time.monotonic()
        while not self._closing:
            with anyio.move_on_after(self.backstop):  # no inner task, as wait_for makes
                await self._resync_now.wait()
            self._resync_now.clear()
            now = time.monotonic()
            try:
                if self._reclaim_now or now - renewed >= self.lease / 3:
                    held = await self._round_trip(self._renew())
                    renewed = now
                    # (Re)subscribed, or the lease had lapsed: the service may have lost
                    # this process's runs, or another process may have settled them.
                    if self._reclaim_now or not held:
                        self._reclaim_now = False
                        await self._reclaim_ours()
                await self._resync()
                # Only after a whole lease connected: others back from the same outage
                # must have had their chance to renew, or their live runs would be reaped.
                if now - reaped >= self.lease and now - self._up_since >= self.lease:
                    reaped = now
                    settled = await self._round_trip(self._reap())
                    if settled:
                        logger.warning(
                            "cancelkit: settled %d runs of workers whose lease expired", settled
                        )
            except BackendUnavailable:
                pass  # noted by _round_trip; the next round tries again
            except Exception:  # a bug or a damaged table: say so, keep the lease alive
                logger.exception(
                    "cancelkit: a round of the %s backend's keeper failed", self.service
                )

    async def _reclaim_ours(self) -> None:
        claimed = dict(self._mine)
        if not claimed:
            return
        lost: list[str] = await self._round_trip(self._reclaim(claimed))
        if lost:
            reason = CancelReason(
                "shutdown",
                f"this process could not reach {self.service} for longer than its lease;"
                " its runs were settled by another process",
            )
            logger.warning("cancelkit: %d runs lost with this process's lease", len(lost))
            for run_id in lost:  # end them as the other processes were told they ended
                self._deliver(run_id, reason, by_message=False)

    # -- reachability ----------------------------------------------------------------

    async def _round_trip(self, call: Awaitable[Any]) -> Any:
        """Await a call to the service; "unreachable" becomes :class:`BackendUnavailable`."""
        began = next(self._tickets)
        try:
            with _timeout(self.timeout):
                result = await call
        except self.unreachable as exc:
            self._note_down(exc, began)
            raise BackendUnavailable(f"{self.service} cannot be reached: {exc}") from exc
        except TimeoutError as exc:
            self._note_down(exc, began)
            raise BackendUnavailable(
                f"{self.service} did not answer within {self.timeout}s"
            ) from exc
        self._note_up(began)
        return result

    def _note_up(self, began: int) -> None:
        if began < self._news:
            return  # older news than what is known (see _note_down)
        self._news = began
        if self._down_since is not None:
            logger.warning(
                "cancelkit: %s is reachable again after %.1fs",
                self.service,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            self._up_since = time.monotonic()

    def _note_down(self, exc: BaseException, began: int) -> None:
        """Count the service down, unless a call begun later has already been heard of.

        Calls overlap: one begun during an outage can fail after a later one has found
        the service back. That failure is older news, and must not turn :attr:`connected`
        back to False; nor may a slow success begun before a failure turn it True.
        """
        if began < self._news:
            return
        self._news = began
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "cancelkit: %s is unreachable (%r): Stops of this process's runs still "
                "work here; Stops through other processes wait for it",
                self.service,
                exc,
            )


def _unavailable(exc: BackendUnavailable) -> BackendUnavailable:
    copy = BackendUnavailable(*exc.args)
    copy.__cause__ = exc.__cause__
    return copy


def _timeout(seconds: float) -> Any:
    return anyio.fail_after(seconds)


def _shielded(seconds: float) -> Any:
    return anyio.fail_after(seconds, shield=True)

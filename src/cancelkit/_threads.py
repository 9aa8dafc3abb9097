"""``to_thread``: run sync code in a pooled worker thread that can be told to stop.

Python cannot kill a thread, so stopping one is cooperative: the function sees a
token (``current_token()``) and returns when it is cancelled. What cancelkit
guarantees is the rest: the token is cancelled with the caller's reason the moment the
caller is cancelled, the caller waits a bounded ``grace`` for the thread, and a thread
that ignores its token is reported by name (``AbandonedThreadWarning``) and its pool
slot given back, never leaked silently.

The pool is our own, of daemon threads: ``concurrent.futures`` joins its workers at
interpreter exit, so one abandoned thread would hang the process on shutdown.

Everything is bounded, so one user cannot starve the others and nothing queues
silently: a run uses at most ``threads_per_run`` workers at once (its further calls
wait their turn), a call that finds no free worker within ``queue_timeout`` is
withdrawn with a clear error, and past ``MAX_ABANDONED`` threads that ignored their
token, new calls are refused at once. Stores do not share this pool: each has its
own executor (see :func:`run_sync_shielded`), so tools can never block a commit.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import itertools
import logging
import threading
import warnings
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, TypeVarTuple, Unpack

import anyio

from ._backends import current_backend, make_waiter
from ._exceptions import AbandonedThreadWarning, Cancelled, CancelReason, RunCancelled
from ._receipt import record
from ._token import CancelToken, _current
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "DEFAULT_GRACE",
    "Executor",
    "QuotaSource",
    "ThreadQuota",
    "run_sync_shielded",
    "thread_stats",
    "to_thread",
)

T = TypeVar("T")
PosArgs = TypeVarTuple("PosArgs")

DEFAULT_GRACE: Final = 1.0
"""Seconds a cancelled caller waits for its worker thread before abandoning it."""

MAX_WORKERS: Final = 40
"""Worker threads running at once (as anyio's default limiter); more calls queue."""

MAX_QUEUED: Final = 1000
"""Calls waiting for a worker at once; past it, new calls are refused at once."""

MAX_ABANDONED: Final = 64
"""Abandoned threads still running; past it, new calls are refused at once."""

DEFAULT_QUEUE_TIMEOUT: Final = 30.0
"""Seconds a call may wait for a free worker before it is withdrawn."""

DEFAULT_THREADS_PER_RUN: Final = 10
"""Workers one run may use at once (a quarter of the pool)."""

_IDLE_SECONDS: Final = 10.0

logger = logging.getLogger("cancelkit")


class _State(enum.Enum):
    QUEUED = enum.auto()
    RUNNING = enum.auto()
    DONE = enum.auto()
    SKIPPED = enum.auto()
    ABANDONED = enum.auto()


class _Job(Generic[T]):
    __slots__ = ("args", "context", "error", "fn", "on_done", "result", "state", "token")

    def __init__(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        token: CancelToken,
        on_done: Callable[[], None],
    ) -> None:
        self.fn = fn
        self.args = args
        self.token = token
        self.on_done = on_done
        self.context = contextvars.copy_context()
        self.state = _State.QUEUED
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        _current.set(self.token)
        self.result = self.fn(*self.args)


class ExecutorFullError(RuntimeError):
    """Raised inside the pool's lock by :meth:`Executor.submit`; mapped by callers."""


class Executor:
    """A bounded pool of daemon worker threads with withdrawal and abandonment.

    ``to_thread`` shares one (``MAX_WORKERS`` threads); each store has its own (a
    SQLite store: one thread, its single writer), so user tools can never hold up
    database work.

    Args:
        max_workers: threads running jobs at once.
        name: the threads' name prefix.
        max_queued: jobs waiting at once; past it ``submit`` raises.
        max_abandoned: abandoned threads still running; past it ``submit`` raises.
    """

    def __init__(
        self,
        max_workers: int,
        *,
        name: str = "cancelkit-worker",
        max_queued: int = MAX_QUEUED,
        max_abandoned: int = MAX_ABANDONED,
    ) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._jobs: deque[_Job[Any]] = deque()
        self._max = max_workers
        self._max_queued = max_queued
        self._max_abandoned = max_abandoned
        self._prefix = name
        self._workers = 0
        self._idle = 0
        self._running = 0
        self._names = itertools.count(1)
        self.abandoned = 0
        self.refused = 0
        self._closing = False

    def close(self) -> None:
        """Let idle workers end now rather than after their idle timeout.

        Jobs already queued still run; a later :meth:`submit` starts workers again.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def submit(self, job: _Job[Any]) -> None:
        """Queue ``job``.

        Raises:
            ExecutorFullError: too many queued jobs, or too many abandoned threads.
        """
        with self._cond:
            if self.abandoned >= self._max_abandoned:
                self.refused += 1
                raise ExecutorFullError(
                    f"{self.abandoned} worker threads ignored their cancel token and are "
                    f"still running (the limit is {self._max_abandoned}); new calls are "
                    "refused until they return"
                )
            if len(self._jobs) - self._idle >= self._max_queued:
                self.refused += 1
                raise ExecutorFullError(
                    f"{len(self._jobs)} calls are already waiting for one of "
                    f"{self._max} worker threads"
                )
            self._closing = False
            self._jobs.append(job)
            if len(self._jobs) > self._idle and self._workers < self._max:
                self._start_worker()
            else:
                self._cond.notify()

    def _start_worker(self) -> None:
        self._workers += 1
        name = f"{self._prefix}-{next(self._names)}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def skip(self, job: _Job[Any]) -> bool:
        """Drop a job that has not started yet. Returns whether it was dropped."""
        with self._cond:
            if job.state is not _State.QUEUED:
                return False
            job.state = _State.SKIPPED
            self._jobs.remove(job)
            return True

    def abandon(self, job: _Job[Any]) -> bool:
        """Give up on a running job: its thread no longer counts against the limit."""
        with self._cond:
            if job.state is not _State.RUNNING:
                return False
            job.state = _State.ABANDONED
            self._running -= 1
            self._workers -= 1
            self.abandoned += 1
            if self._jobs and self._idle == 0:
                self._start_worker()
            return True

    def busy(self) -> str:
        """How busy the pool is, for error messages."""
        with self._cond:
            return f"{self._workers - self._idle} of {self._max} busy, {len(self._jobs)} queued"

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "workers": self._workers,
                "idle": self._idle,
                "running": self._running,
                "queued": len(self._jobs),
                "abandoned_running": self.abandoned,
                "abandoned_limit": self._max_abandoned,
                "refused": self.refused,
            }

    def _work(self) -> None:
        thread = threading.current_thread()
        base_name = thread.name
        while True:
            with self._cond:
                while not self._jobs:
                    if self._closing:
                        self._workers -= 1
                        return
                    self._idle += 1
                    woke = self._cond.wait(_IDLE_SECONDS)
                    self._idle -= 1
                    if not woke and not self._jobs:
                        self._workers -= 1
                        return
                job = self._jobs.popleft()
                job.state = _State.RUNNING
                self._running += 1
            thread.name = f"{base_name}:{_name(job.fn)}"
            try:
                job.context.run(job.run)
            except BaseException as exc:  # delivered to the caller, not lost  # noqa: BLE001
                job.error = exc
            thread.name = base_name
            with self._cond:
                abandoned = job.state is _State.ABANDONED
                if abandoned:
                    self.abandoned -= 1
                else:
                    job.state = _State.DONE
                    self._running -= 1
            if abandoned:
                _report_late_return(job)
                return  # our slot was handed to a new thread when we were abandoned
            # Not held while idle: the job holds its arguments, its result and its
            # caller's waiter (and through it the caller's event loop). Dropped before
            # the caller is told, so a caller that looks at once finds nothing held.
            on_done = job.on_done
            del job
            on_done()
            del on_done


def _name(fn: Callable[..., Any]) -> str:
    """What the receipt, the logs and the thread's name call ``fn``: its qualified
    name, through ``functools.partial`` (whose repr would show an address)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or repr(fn)


def _report_late_return(job: _Job[Any]) -> None:
    name = _name(job.fn)
    if job.error is not None and not isinstance(job.error, Cancelled):
        logger.warning("cancelkit: abandoned thread %s finally ended with %r", name, job.error)
    else:
        logger.info("cancelkit: abandoned thread %s finally returned", name)


_pool = Executor(MAX_WORKERS)


def thread_stats() -> dict[str, int]:
    """Counters of ``to_thread``'s pool: ``workers``, ``idle``, ``running``,
    ``queued``, ``abandoned_running``, ``abandoned_limit`` and ``refused``.

    ``running`` counts jobs whose function has not returned yet. It drops before the
    caller is told of the result, so it is 0 once every awaited call has returned;
    ``workers - idle`` may still count a thread on its way back to the pool.

    ``abandoned_running`` counts threads that ignored their token past their grace
    period and have still not returned; once it reaches ``abandoned_limit`` new
    calls are refused (counted in ``refused``, with calls refused for a full queue).
    """
    return _pool.stats()


class ThreadQuota:
    """How many of the pool's workers one run may use at once.

    :meth:`Runs.start` gives each top-level run one (its child runs share it), so a
    prompt that asks for ninety tool calls takes its turns instead of taking every
    thread from everyone else.
    """

    __slots__ = ("_semaphore", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore: anyio.Semaphore | None = None

    def semaphore(self) -> anyio.Semaphore:
        """The run's semaphore, made on first use (most runs never use a thread)."""
        if self._semaphore is None:
            self._semaphore = anyio.Semaphore(self.limit)
        return self._semaphore

    def thread_quota(self) -> ThreadQuota:
        """Itself: a quota is its own :class:`QuotaSource`."""
        return self


class QuotaSource(Protocol):
    """What holds the worker-thread quota of the code running here: a top-level run,
    which makes its :class:`ThreadQuota` on first use, so the many runs that never
    call a thread never have one."""

    def thread_quota(self) -> ThreadQuota:
        """The quota, made on first use."""
        ...


_quota: ContextVar[QuotaSource | None] = ContextVar("cancelkit_thread_quota", default=None)


def _refused(message: str) -> RunCancelled:
    return RunCancelled(CancelReason("error", f"to_thread() refused: {message}"))


def _caller_reason(exc: BaseException, token: CancelToken) -> CancelReason:
    """Why the awaiting task was cancelled, as precisely as can be known."""
    for candidate in (token, _current.get()):
        if candidate is not None and candidate.reason is not None:
            return candidate.reason
    for arg in exc.args:
        if isinstance(arg, CancelReason):
            return arg
    return CancelReason("parent", "the awaiting task was cancelled")


async def to_thread(
    fn: Callable[[Unpack[PosArgs]], T],
    /,
    *args: *PosArgs,
    token: CancelToken | None = None,
    grace: float = DEFAULT_GRACE,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
) -> T:
    """Run the sync ``fn(*args)`` in a worker thread, stoppable through a token.

    Inside the thread, ``current_token()`` is the token of this call: a child of
    ``token`` if given, else of the current run's token, else a new one. When the
    awaiting task is cancelled, that token is cancelled with the caller's reason and
    the caller waits up to ``grace`` seconds for ``fn`` to return; if it does not, an
    :class:`AbandonedThreadWarning` names it and the caller stops waiting.

    Inside a run, at most the run's quota of calls (``Runs(threads_per_run=...)``)
    hold a worker at once; the others wait their turn.

    Args:
        fn: a sync callable (a coroutine function is refused).
        *args: positional arguments for ``fn``.
        token: a token whose cancellation also stops this call.
        grace: seconds to wait for the thread once the caller is cancelled.
        queue_timeout: seconds to wait for a free worker before giving up (the call
            is withdrawn, never run later).

    Returns:
        What ``fn`` returned.

    Raises:
        RunCancelled: ``fn`` raised :class:`Cancelled` (its token was cancelled while
            the caller itself was not); or, with kind ``error``, the call was refused:
            no worker was free within ``queue_timeout``, too many calls are queued,
            or too many abandoned threads are still running (``thread_stats()``).
        TypeError, ValueError: bad arguments, before anything runs.
    """
    if not callable(fn):
        raise TypeError(f"to_thread(): fn must be callable, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"to_thread(): {fn.__qualname__} is a coroutine function; await it instead")
    if token is not None and not isinstance(token, CancelToken):
        raise TypeError(f"to_thread(): token must be a CancelToken, not {type(token).__name__}")
    limit = seconds(grace, "grace", allow_none=False)
    patience = seconds(queue_timeout, "queue_timeout", allow_none=False)
    assert limit is not None
    assert patience is not None
    current_backend()  # fail here, not in a thread, when no loop runs

    source = _quota.get()
    if source is None:
        return await _call_in_thread(fn, args, token, limit, patience)
    async with source.thread_quota().semaphore():
        return await _call_in_thread(fn, args, token, limit, patience)


async def _call_in_thread(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    token: CancelToken | None,
    grace: float,
    queue_timeout: float,
) -> T:
    parent = token if token is not None else _current.get()
    call_token = parent.child() if parent is not None else CancelToken()
    waiter = make_waiter()
    job: _Job[T] = _Job(fn, args, call_token, waiter.set)
    name = _name(fn)
    try:
        _pool.submit(job)
    except ExecutorFullError as full:
        record("thread", name, "withdrawn", detail="refused: the pool is full")
        raise _refused(str(full)) from None
    try:
        with anyio.move_on_after(queue_timeout):
            await waiter.wait()
        if not waiter.is_set:
            if _pool.skip(job):  # still queued: withdrawn, it will never run
                record("thread", name, "withdrawn", detail="no worker was free")
                raise _refused(f"no worker thread was free for {queue_timeout}s ({_pool.busy()})")
            await waiter.wait()
    except BaseException as exc:
        if isinstance(exc, RunCancelled):
            raise
        if _pool.skip(job):
            record("thread", name, "withdrawn", detail="stopped before it started")
        elif not waiter.is_set:
            call_token.cancel(_caller_reason(exc, call_token))
            if not await waiter.wait_shielded(grace, rearm=False) and _pool.abandon(job):
                record("thread", name, "abandoned", detail=f"ignored its token for {grace}s")
                warnings.warn(
                    f"cancelkit: thread running {name} ignored its cancel token for "
                    f"{grace}s; abandoned (it keeps running until it returns)",
                    AbandonedThreadWarning,
                    stacklevel=3,
                )
            else:
                record("thread", name, _thread_outcome(job.error))
        else:
            record("thread", name, _thread_outcome(job.error))
        raise
    error, job.error = job.error, None
    record("thread", name, _thread_outcome(error))
    if error is not None:
        if isinstance(error, Cancelled):
            raise RunCancelled(error.reason) from error
        raise error
    return job.result  # type: ignore[return-value]  # set by fn when no error


def _thread_outcome(error: BaseException | None) -> str:
    if error is None:
        return "returned"
    return "cancelled" if isinstance(error, Cancelled) else "failed"


async def run_sync_shielded(
    executor: Executor,
    fn: Callable[[Unpack[PosArgs]], T],
    /,
    *args: *PosArgs,
    timeout: float,
    on_timeout: Callable[[], object] | None = None,
) -> T:
    """Run ``fn`` on ``executor`` to a known end, cancellation held off.

    For work that must not be abandoned half-way, such as a database commit: the
    caller waits until ``fn`` returns even if it is cancelled meanwhile (the
    cancellation is delivered at its next await). Its outcome is always known:

    - not started within ``timeout`` (the executor was busy): withdrawn, never to
      run later, and ``TimeoutError`` is raised: nothing was done;
    - started but still running after ``timeout``: ``on_timeout()`` is called
      (``sqlite3.Connection.interrupt``, say), again every second, and the caller
      waits for ``fn`` to end, however long: a started operation is never
      abandoned, so what it did is known when this returns or raises.

    Raises:
        TimeoutError: withdrawn before it started, or interrupted (from ``fn``'s
            own error).
        Exception: what ``fn`` raised.
    """
    waiter = make_waiter()
    job: _Job[T] = _Job(fn, args, CancelToken(), waiter.set)
    try:
        executor.submit(job)
    except ExecutorFullError as full:
        raise TimeoutError(f"not started: {full}") from None
    if not await waiter.wait_shielded(timeout):
        if executor.skip(job):
            raise TimeoutError(
                f"not started within {timeout}s ({executor.busy()}); withdrawn, nothing done"
            )
        name = getattr(fn, "__qualname__", repr(fn))
        interrupts = 0
        while not await waiter.wait_shielded(0 if interrupts == 0 else DEFAULT_GRACE):
            if on_timeout is not None:
                on_timeout()
            interrupts += 1
            if interrupts == 3:
                logger.warning("cancelkit: %s still running after an interrupt; waiting", name)
        if job.error is not None and on_timeout is not None:
            raise TimeoutError(f"{name} interrupted after {timeout}s") from job.error
    if job.error is not None:
        error, job.error = job.error, None
        raise error
    return job.result  # type: ignore[return-value]  # set by fn when no error

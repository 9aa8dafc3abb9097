"""``to_thread``: run sync code in a pooled worker thread that can be told to stop.

Python cannot kill a thread, so stopping one is cooperative: the function sees a
token (``current_token()``) and returns when it is cancelled. What cancelkit
guarantees is the rest: the token is cancelled with the caller's reason the moment the
caller is cancelled, the caller waits a bounded ``grace`` for the thread, and a thread
that ignores its token is reported by name (``AbandonedThreadWarning``) and its pool
slot given back, never leaked silently.

The pool is our own, of daemon threads: ``concurrent.futures`` joins its workers at
interpreter exit, so one abandoned thread would hang the process on shutdown.
"""

from __future__ import annotations

import contextvars
import enum
import inspect
import itertools
import logging
import threading
import warnings
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, TypeVarTuple, Unpack

from ._backend import current_backend, make_waiter
from ._exceptions import AbandonedThreadWarning, Cancelled, CancelReason, RunCancelled
from ._token import CancelToken, _current
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("DEFAULT_GRACE", "run_sync_shielded", "thread_stats", "to_thread")

T = TypeVar("T")
PosArgs = TypeVarTuple("PosArgs")

DEFAULT_GRACE: Final = 1.0
"""Seconds a cancelled caller waits for its worker thread before abandoning it."""

MAX_WORKERS: Final = 40
"""Worker threads running at once (as anyio's default limiter); more calls queue."""

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


class _Pool:
    """A bounded pool of daemon worker threads with abandonment."""

    def __init__(self, max_workers: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._jobs: deque[_Job[Any]] = deque()
        self._max = max_workers
        self._workers = 0
        self._idle = 0
        self._names = itertools.count(1)
        self.abandoned = 0

    def submit(self, job: _Job[Any]) -> None:
        with self._cond:
            self._jobs.append(job)
            if len(self._jobs) > self._idle and self._workers < self._max:
                self._workers += 1
                name = f"cancelkit-worker-{next(self._names)}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
            else:
                self._cond.notify()

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
            self._workers -= 1
            self.abandoned += 1
            if self._jobs and self._idle == 0:
                self._workers += 1
                name = f"cancelkit-worker-{next(self._names)}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
            return True

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "workers": self._workers,
                "idle": self._idle,
                "queued": len(self._jobs),
                "abandoned_running": self.abandoned,
            }

    def _work(self) -> None:
        thread = threading.current_thread()
        base_name = thread.name
        while True:
            with self._cond:
                while not self._jobs:
                    self._idle += 1
                    woke = self._cond.wait(_IDLE_SECONDS)
                    self._idle -= 1
                    if not woke and not self._jobs:
                        self._workers -= 1
                        return
                job = self._jobs.popleft()
                job.state = _State.RUNNING
            thread.name = f"{base_name}:{getattr(job.fn, '__qualname__', 'fn')}"
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
            if abandoned:
                _report_late_return(job)
                return  # our slot was handed to a new thread when we were abandoned
            job.on_done()


def _report_late_return(job: _Job[Any]) -> None:
    name = getattr(job.fn, "__qualname__", repr(job.fn))
    if job.error is not None and not isinstance(job.error, Cancelled):
        logger.warning("cancelkit: abandoned thread %s finally ended with %r", name, job.error)
    else:
        logger.info("cancelkit: abandoned thread %s finally returned", name)


_pool = _Pool(MAX_WORKERS)


def thread_stats() -> dict[str, int]:
    """Counters of the worker pool: ``workers``, ``idle``, ``queued``, ``abandoned_running``.

    ``abandoned_running`` counts threads that ignored their token past their grace
    period and have still not returned.
    """
    return _pool.stats()


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
) -> T:
    """Run the sync ``fn(*args)`` in a worker thread, stoppable through a token.

    Inside the thread, ``current_token()`` is the token of this call: a child of
    ``token`` if given, else of the current run's token, else a new one. When the
    awaiting task is cancelled, that token is cancelled with the caller's reason and
    the caller waits up to ``grace`` seconds for ``fn`` to return; if it does not, an
    :class:`AbandonedThreadWarning` names it and the caller stops waiting.

    Args:
        fn: a sync callable (a coroutine function is refused).
        *args: positional arguments for ``fn``.
        token: a token whose cancellation also stops this call.
        grace: seconds to wait for the thread once the caller is cancelled.

    Returns:
        What ``fn`` returned.

    Raises:
        RunCancelled: ``fn`` raised :class:`Cancelled` (its token was cancelled while
            the caller itself was not).
        TypeError, ValueError: bad arguments, before anything runs.
    """
    if not callable(fn):
        raise TypeError(f"to_thread(): fn must be callable, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"to_thread(): {fn.__qualname__} is a coroutine function; await it instead")
    if token is not None and not isinstance(token, CancelToken):
        raise TypeError(f"to_thread(): token must be a CancelToken, not {type(token).__name__}")
    limit = seconds(grace, "grace", allow_none=False)
    assert limit is not None
    current_backend()  # fail here, not in a thread, when no loop runs

    parent = token if token is not None else _current.get()
    call_token = parent.child() if parent is not None else CancelToken()
    waiter = make_waiter()
    job: _Job[T] = _Job(fn, args, call_token, waiter.set)
    _pool.submit(job)
    try:
        await waiter.wait()
    except BaseException as exc:
        if not _pool.skip(job) and not waiter.is_set:
            call_token.cancel(_caller_reason(exc, call_token))
            if not await waiter.wait_shielded(limit, rearm=False) and _pool.abandon(job):
                name = getattr(fn, "__qualname__", repr(fn))
                warnings.warn(
                    f"cancelkit: thread running {name} ignored its cancel token for "
                    f"{limit}s; abandoned (it keeps running until it returns)",
                    AbandonedThreadWarning,
                    stacklevel=2,
                )
        raise
    if job.error is not None:
        error, job.error = job.error, None
        if isinstance(error, Cancelled):
            raise RunCancelled(error.reason) from error
        raise error
    return job.result  # type: ignore[return-value]  # set by fn when no error


async def run_sync_shielded(
    fn: Callable[[Unpack[PosArgs]], T],
    /,
    *args: *PosArgs,
    timeout: float,
    on_timeout: Callable[[], object] | None = None,
) -> T:
    """Run ``fn`` in a worker thread to its end, cancellation held off, time bounded.

    For work that must not be abandoned half-way, such as a database commit: the
    caller waits until ``fn`` returns even if it is cancelled meanwhile (the
    cancellation is delivered at its next await). After ``timeout`` seconds
    ``on_timeout()`` is called (``sqlite3.Connection.interrupt``, say) and the wait
    goes on up to the default grace, after which the thread is abandoned, reported.

    Raises:
        TimeoutError: ``fn`` had to be interrupted, or never returned.
        Exception: what ``fn`` raised.
    """
    waiter = make_waiter()
    job: _Job[T] = _Job(fn, args, CancelToken(), waiter.set)
    _pool.submit(job)
    if not await waiter.wait_shielded(timeout):
        if on_timeout is not None:
            on_timeout()
        if not await waiter.wait_shielded(DEFAULT_GRACE) and _pool.abandon(job):
            name = getattr(fn, "__qualname__", repr(fn))
            warnings.warn(
                f"cancelkit: {name} did not return after being interrupted; abandoned",
                AbandonedThreadWarning,
                stacklevel=2,
            )
            raise TimeoutError(f"{name} took longer than {timeout}s and did not stop")
        if job.error is not None:
            raise TimeoutError(f"interrupted after {timeout}s") from job.error
    if job.error is not None:
        error, job.error = job.error, None
        raise error
    return job.result  # type: ignore[return-value]  # set by fn when no error

"""Sync runs: a run driven by the calling thread, with no event loop anywhere.

WSGI handlers, Django views, Flask routes and scripts run sync code in a thread. A
sync run gives that code what an async run has: an id in the same :class:`Runs`
registry (``runs.cancel(run_id)`` from any other thread, ``runs.get(run_id)``), its
own token as ``current_token()``, a deadline, the same statuses, and the same
:class:`RunOutcome` with a Stop receipt. Python cannot interrupt a thread, so the
Stop is seen where the code looks: ``current_token().check()`` between steps, and
guarded sync streams (:func:`cancelkit.guard_sync_stream`), which the Stop wakes at
once from the cancelling thread.

A sync run is the :class:`Run` an async one is, settled by the calling thread: the
run's main task is an :class:`OwnedTask` that no loop drives, finished by
:meth:`SyncRun.finish` exactly as the loop finishes an async run's (one decision
between completing and a Stop, on the token).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar, TypeVarTuple, Unpack

from ._receipt import record
from ._run import Run, RunOutcome, work_context
from ._tasks import OwnedTask

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("SyncRun",)

T = TypeVar("T")
R = TypeVar("R")
PosArgs = TypeVarTuple("PosArgs")


class SyncRun(Generic[T]):
    """A run driven by the calling thread: call its code, then finish it.

    Obtained from :meth:`Runs.start_sync` (:meth:`Runs.run_sync` does all three steps
    for one function). Every :meth:`call` runs inside the run: ``current_token()`` is
    the run's token, guarded streams and worker threads report to its receipt.
    :meth:`finish` ends it, once; until then the run is active in the registry.
    Use it when the run's work is more than one call, such as a WSGI response whose
    body is produced after the app returns. Not thread-safe: one thread drives it
    (any thread may cancel it).
    """

    __slots__ = ("_context", "_main", "_thread", "run")

    def __init__(self, run: Run[T]) -> None:
        self.run = run
        """The :class:`Run` (``id``, ``status``, ``reason``, ``outcome``...)."""
        self._main: OwnedTask[T] = OwnedTask(f"run:{run.id}", run.token)
        self._context = work_context(run.token, run, None)  # its threads are its caller's
        self._thread: str | None = None

    def __repr__(self) -> str:
        return f"<SyncRun {self.run.id!r} {self.run.status}>"

    @property
    def id(self) -> str:
        """The run's id."""
        return self.run.id

    def call(self, fn: Callable[[Unpack[PosArgs]], R], /, *args: *PosArgs) -> R:
        """Call the sync ``fn(*args)`` inside the run, in this thread.

        Raises:
            Cancelled: the run was stopped before the call (``fn`` is not called),
                or ``fn`` saw the Stop.
            RuntimeError: the run has been finished.
            Exception: what ``fn`` raised.
        """
        if self._main.done():
            raise RuntimeError(f"run {self.run.id} has been finished; it cannot call more")
        self._thread = threading.current_thread().name
        self.run.token.check()
        return self._context.run(fn, *args)

    def finish(self, value: T | None = None, error: BaseException | None = None) -> RunOutcome[T]:
        """End the run: ``completed`` with ``value``, ``failed`` with ``error``, or
        ``cancelled`` if a Stop won (or ``error`` is :class:`Cancelled`).

        Completing and a concurrent Stop are decided atomically, as for an async run:
        ``runs.cancel()`` returned ``True`` exactly when this ends ``cancelled``.
        Idempotent: a second call returns the outcome of the first.
        """
        outcome = self.run.outcome
        if outcome is not None:
            return outcome
        main = self._main
        main._finish(value, error, cancelled=False)  # noqa: SLF001 - the run's own main task
        if self._thread is not None:
            thread_outcome = {"cancelled": "cancelled", "failed": "failed"}.get(
                main.status, "returned"
            )
            self._context.run(record, "thread", self._thread, thread_outcome)
        self.run._end_sync(main)  # noqa: SLF001 - a sync run settles its own Run
        outcome = self.run.outcome
        assert outcome is not None
        return outcome

    def result(self) -> T:
        """The value of a finished run.

        Raises:
            RunCancelled: the run was cancelled; ``.reason`` says why.
            Exception: the error the run failed with.
            RuntimeError: the run has not been finished.
        """
        outcome = self.run.outcome
        if outcome is None:
            raise RuntimeError(f"run {self.run.id} is still running; finish() it first")
        return outcome.result()


def run_in_thread(sync_run: SyncRun[T], fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """:meth:`Runs.run_sync`'s body: call, finish, return or raise."""
    try:
        value = sync_run.call(fn, *args)
    except BaseException as exc:
        if sync_run.finish(error=exc).status == "cancelled":  # a Stop, however it surfaced
            return sync_run.result()  # raises RunCancelled with the run's reason
        raise
    sync_run.finish(value)
    return sync_run.result()

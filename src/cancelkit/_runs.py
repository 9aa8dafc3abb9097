"""Runs: named units of work, cancellable by id from anywhere, leaving no orphans.

A run is one task started by :meth:`Runs.start` under an id, with its own
:class:`CancelToken` (the run's ``current_token()``). ``Runs.cancel(run_id)`` works
from any task, any thread, or code with no event loop. Work the run starts with
:func:`spawn`, and runs started from inside it, are its children: cancelled with it,
with its reason, and cancelled (kind ``parent``) when it ends for any other cause.
A run is not over until its children are.

Completing and cancelling are decided atomically on the run's token, so a Stop that
races the end of a run has one winner, and ``cancel()`` returns ``True`` exactly when
the run ends ``cancelled``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, TypeVarTuple, Unpack

from ._backend import Waiter, make_waiter
from ._exceptions import CancelReason, RunCancelled
from ._tasks import TaskHandle, TaskState, start_task
from ._token import CancelToken
from ._validate import close_all, positive_int, seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

__all__ = ("Run", "RunOutcome", "RunStatus", "Runs", "spawn")

T = TypeVar("T")
PosArgs = TypeVarTuple("PosArgs")

RunStatus = Literal["running", "cancelling", "cancelled", "completed", "failed"]

logger = logging.getLogger("cancelkit")

_current_run: ContextVar[Run[Any] | None] = ContextVar("cancelkit_current_run", default=None)

_FINISHED = CancelReason("parent", "the run finished")


@dataclass(frozen=True, slots=True)
class RunOutcome(Generic[T]):
    """How a run ended."""

    run_id: str
    status: RunStatus
    reason: CancelReason | None
    value: T | None
    error: BaseException | None


class Run(Generic[T]):
    """One run: its id, owner, status and reason, and its ending.

    Obtained from :meth:`Runs.start` or :meth:`Runs.get`; not created directly.
    """

    def __init__(
        self, runs: Runs, run_id: str, owner: object, token: CancelToken, parent: Run[Any] | None
    ) -> None:
        self._runs = runs
        self.id = run_id
        self.owner = owner
        self.token = token
        self.parent = parent
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.stragglers: list[str] = []
        self._children: set[TaskHandle[Any] | Run[Any]] = set()
        self._closing = False
        self._children_gone: Waiter | None = None
        self._failure: BaseException | None = None
        self._outcome: RunOutcome[T] | None = None
        self._waiters: list[Waiter] = []
        self._on_settle: list[Callable[[Run[T]], object]] = []

    def __repr__(self) -> str:
        return f"<Run {self.id!r} {self.status}>"

    @property
    def status(self) -> RunStatus:
        """``running``, ``cancelling`` (asked to stop, still unwinding), then how it ended."""
        if self._outcome is not None:
            return self._outcome.status
        return "cancelling" if self.token.cancelled else "running"

    @property
    def reason(self) -> CancelReason | None:
        """Why the run was stopped (kind ``error`` for a failed run), else ``None``."""
        if self._outcome is not None:
            return self._outcome.reason
        return self.token.reason

    @property
    def done(self) -> bool:
        """Whether the run has ended, children included."""
        return self._outcome is not None

    @property
    def outcome(self) -> RunOutcome[T] | None:
        """How the run ended, or ``None`` while it runs."""
        return self._outcome

    @property
    def children(self) -> list[TaskHandle[Any] | Run[Any]]:
        """Tasks and runs started inside this run that are still running."""
        return list(self._children)

    def cancel(self, reason: CancelReason | None = None) -> bool:
        """Stop the run and everything it started; safe from any task or thread.

        Returns:
            True if this call cancelled the run (it will end ``cancelled``); False
            if it had already finished or been cancelled.
        """
        return self.token.cancel(reason)

    async def wait(self) -> RunOutcome[T]:
        """Wait for the run to end, children included; never raises its error."""
        if self._outcome is None:
            waiter = make_waiter()
            self._waiters.append(waiter)
            try:
                await waiter.wait()
            finally:
                self._waiters.remove(waiter)
        assert self._outcome is not None
        return self._outcome

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds, not interrupted by cancellation."""
        if self._outcome is None:
            waiter = make_waiter()
            self._waiters.append(waiter)
            try:
                await waiter.wait_shielded(timeout)
            finally:
                self._waiters.remove(waiter)
        return self._outcome is not None

    async def result(self) -> T:
        """Wait for the run and return its value.

        Raises:
            RunCancelled: the run was cancelled; ``.reason`` says why.
            Exception: the error the run failed with.
        """
        outcome = await self.wait()
        if outcome.status == "cancelled":
            assert outcome.reason is not None
            raise RunCancelled(outcome.reason)
        if outcome.status == "failed":
            assert outcome.error is not None
            raise outcome.error
        return outcome.value  # type: ignore[return-value]

    async def _body(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        error: BaseException | None = None
        try:
            value = await fn(*args)
        except Exception as exc:
            error = exc
            self.token._finish()  # noqa: SLF001 - a failure, not a cancel, unless one came first
            raise
        else:
            self.token._finish()  # noqa: SLF001 - decides: completed, unless a cancel won
            return value
        finally:
            await self._close_children(error)

    async def _close_children(self, error: BaseException | None) -> None:
        self._closing = True
        if not self._children:
            return
        if self.token.reason is None:  # else its cancel already reached every child token
            reason = CancelReason("error", f"the run failed: {error!r}") if error else _FINISHED
            for child in list(self._children):
                child.cancel(reason)
        if self._children:
            self._children_gone = make_waiter()
            await self._children_gone.wait_shielded(self._runs.child_grace)
            self._children_gone = None
        self.stragglers = [
            child.name if isinstance(child, TaskHandle) else f"run {child.id}"
            for child in self._children
        ]
        if self.stragglers:
            logger.warning(
                "cancelkit: run %s ended with children still running after %ss: %s",
                self.id,
                self._runs.child_grace,
                ", ".join(self.stragglers),
            )

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str | None) -> TaskHandle[T]:
        if self._closing or self._outcome is not None:
            close_all([coro])
            raise RuntimeError(f"run {self.id} is ending; it cannot start new work")
        task_name = name or f"{self.id}:{getattr(coro, '__qualname__', 'task')}"
        handle = start_task(coro, name=task_name, token=self.token.child())
        self._children.add(handle)
        handle.add_done_callback(self._child_done)
        return handle

    def _child_ended(self, child: TaskHandle[Any] | Run[Any]) -> None:
        self._children.discard(child)
        if not self._children and self._children_gone is not None:
            self._children_gone.set()

    def _child_done(self, child: TaskHandle[Any]) -> None:
        self._child_ended(child)
        if child._state is TaskState.FAILED and self._failure is None:  # noqa: SLF001
            reason = CancelReason("error", f"task {child.name} failed: {child.error!r}")
            if self.token.cancel(reason):
                self._failure = child.error

    def _adopt(self, run: Run[Any]) -> None:
        self._children.add(run)
        run._on_settle.append(self._child_ended)

    def _settle(self, main: TaskHandle[T]) -> None:
        outcome: RunOutcome[T]
        if self._failure is not None:
            outcome = RunOutcome(self.id, "failed", self.token.reason, None, self._failure)
        elif main.state is TaskState.COMPLETED:
            outcome = RunOutcome(self.id, "completed", None, main._value, None)  # noqa: SLF001
        elif main.state is TaskState.CANCELLED:
            outcome = RunOutcome(self.id, "cancelled", self.token.reason, None, main.error)
        else:
            error = main.error
            reason = CancelReason("error", f"{type(error).__name__}: {error}")
            outcome = RunOutcome(self.id, "failed", reason, None, error)
        self._outcome = outcome
        self.ended_at = time.time()
        self._runs._retire(self)  # noqa: SLF001
        for waiter in self._waiters:
            waiter.set()
        callbacks, self._on_settle = self._on_settle, []
        for callback in callbacks:
            callback(self)


class Runs:
    """The registry of runs: start under an id, cancel by id, look up status.

    Args:
        history: how many finished runs are remembered for :meth:`get`.
        child_grace: seconds a run waits for its cancelled children when it ends.
    """

    def __init__(self, *, history: int = 1000, child_grace: float = 5.0) -> None:
        limit = positive_int(history, "history")
        grace = seconds(child_grace, "child_grace", allow_none=False)
        assert limit is not None
        assert grace is not None
        self.child_grace = grace
        self._history_size = limit
        self._lock = threading.Lock()
        self._active: dict[str, Run[Any]] = {}
        self._history: OrderedDict[str, Run[Any]] = OrderedDict()
        self._closed = False

    def __len__(self) -> int:
        """The number of active runs."""
        return len(self._active)

    @property
    def active(self) -> list[Run[Any]]:
        """The runs not yet finished."""
        with self._lock:
            return list(self._active.values())

    def start(
        self,
        fn: Callable[[Unpack[PosArgs]], Awaitable[T]],
        *args: *PosArgs,
        run_id: str | None = None,
        owner: object = None,
        timeout: float | None = None,
    ) -> Run[T]:
        """Start ``fn(*args)`` as a run; call from a task of the loop it should run on.

        Inside a run (or one of its tasks) the new run is a child of that run.

        Args:
            fn: an async function; it is called inside the run's task.
            *args: its positional arguments.
            run_id: the id; by default an unguessable one is made.
            owner: who may cancel it by id (see :meth:`cancel`).
            timeout: seconds after which the run is cancelled with kind ``timeout``.

        Raises:
            ValueError: ``run_id`` is already in use by an active run, or empty.
            TypeError: ``fn`` is not callable (a coroutine object is refused too).
            RuntimeError: the registry has been shut down.
        """
        if not callable(fn):
            close_all([fn])
            raise TypeError(
                f"start() takes an async function and its arguments, not {type(fn).__name__}"
            )
        if run_id is None:
            run_id = secrets.token_urlsafe(16)
        elif not isinstance(run_id, str):
            raise TypeError(f"run_id must be a str, not {type(run_id).__name__}")
        elif not run_id:
            raise ValueError("run_id must not be empty")
        if self._closed:
            raise RuntimeError("this Runs registry has been shut down")
        parent = _current_run.get()
        if parent is not None and parent._outcome is None and not parent._closing:  # noqa: SLF001
            token = parent.token.child(timeout)
        else:
            parent = None
            token = CancelToken(timeout)
        run: Run[T] = Run(self, run_id, owner, token, parent)
        with self._lock:
            if run_id in self._active:
                token.cancel()
                raise ValueError(f"a run with id {run_id!r} is already active")
            self._active[run_id] = run
        reset = _current_run.set(run)
        try:
            main = start_task(run._body(fn, args), name=f"run:{run_id}", token=token)  # noqa: SLF001
        except BaseException:
            with self._lock:
                del self._active[run_id]
            raise
        finally:
            _current_run.reset(reset)
        main.add_done_callback(run._settle)  # noqa: SLF001
        if parent is not None:
            parent._adopt(run)  # noqa: SLF001
        return run

    def cancel(self, run_id: str, reason: CancelReason | None = None, owner: object = None) -> bool:
        """Cancel an active run by id; from any task, any thread, or no event loop.

        Args:
            run_id: the run's id.
            reason: why (default kind ``user``).
            owner: if given, the run is cancelled only if it belongs to this owner.

        Returns:
            True if the run was cancelled by this call. False for an unknown id, a
            finished run, or someone else's run: the three are indistinguishable.
        """
        with self._lock:
            run = self._active.get(run_id)
        if run is None or (owner is not None and run.owner != owner):
            return False
        return run.cancel(reason)

    def get(self, run_id: str, owner: object = None) -> Run[Any] | None:
        """An active or remembered run by id (``None`` if unknown or not ``owner``'s)."""
        with self._lock:
            run = self._active.get(run_id) or self._history.get(run_id)
        if run is None or (owner is not None and run.owner != owner):
            return None
        return run

    def _retire(self, run: Run[Any]) -> None:
        with self._lock:
            if self._active.get(run.id) is run:
                del self._active[run.id]
            self._history[run.id] = run
            self._history.move_to_end(run.id)
            while len(self._history) > self._history_size:
                self._history.popitem(last=False)

    async def shutdown(self, grace: float = 10.0) -> list[str]:
        """Cancel every active run with kind ``shutdown`` and wait up to ``grace``.

        New runs are refused from now on. Waiting is shielded from cancellation.

        Returns:
            The ids of runs still running after ``grace`` (also logged).
        """
        limit = seconds(grace, "grace", allow_none=False)
        assert limit is not None
        self._closed = True
        runs = self.active
        reason = CancelReason("shutdown", "the service is shutting down")
        for run in runs:
            run.cancel(reason)
        deadline = time.monotonic() + limit
        stragglers = [
            run.id
            for run in runs
            if not await run.wait_shielded(max(0.0, deadline - time.monotonic()))
        ]
        if stragglers:
            logger.warning(
                "cancelkit: runs still running %ss after shutdown: %s",
                limit,
                ", ".join(stragglers),
            )
        return stragglers


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> TaskHandle[T]:
    """Start ``coro`` as a child task of the current run.

    It is cancelled with the run (with the run's reason), and when the run ends for
    any other cause (kind ``parent``). A child that fails fails the run.

    Raises:
        RuntimeError: not inside a run, or the run is ending (``coro`` is closed).
    """
    run = _current_run.get()
    if run is None:
        close_all([coro])
        raise RuntimeError("spawn() must be called inside a run (see Runs.start)")
    return run._spawn(coro, name)  # noqa: SLF001

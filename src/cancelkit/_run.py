"""One run: a task with its own token, its children, and one outcome.

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

import contextvars
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from anyio.lowlevel import checkpoint

from ._backends import Waiter, make_waiter
from ._completion import DONE, Completion, run_done_callbacks, wait_ended, wait_ended_shielded
from ._exceptions import CancelReason
from ._outcome import RunOutcome
from ._receipt import Entry, Recording, StopReceipt, _current_recording
from ._tasks import OwnedTask, RunStatus, decide_ending, start_task
from ._threads import ThreadQuota, _quota
from ._token import _current
from ._validate import close_all

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from contextvars import ContextVar

    from ._threads import QuotaSource
    from ._token import CancelToken

__all__ = ("Registry", "Run", "RunOutcome", "RunStatus", "spawn", "work_context")

T = TypeVar("T")


logger = logging.getLogger("cancelkit")

# One context variable names the run code works for: layers below see it as the
# Recording they report their ends to, this module as the Run it is.
_current_run = cast("ContextVar[Run[Any] | None]", _current_recording)

_FINISHED = CancelReason("parent", "the run finished")


class Registry(Protocol):
    """What a run asks of the registry that started it (:class:`Runs`)."""

    @property
    def child_grace(self) -> float:
        """Seconds a run waits for its cancelled children when it ends."""
        ...

    @property
    def threads_per_run(self) -> int:
        """Worker threads a top-level run (with its child runs) may hold at once."""
        ...

    def _retire(self, run: Run[Any], /) -> None:
        """``run`` has ended: the first to know."""
        ...


class Run(Recording, Generic[T]):
    """One run: its id, owner, status and reason, and its ending.

    Obtained from :meth:`Runs.start` or :meth:`Runs.get`; not created directly.
    """

    # Slots, and collections made on first use: a registry holds many idle runs,
    # and every object of theirs is one more for the garbage collector to walk.
    __slots__ = (
        "__weakref__",
        "_children",
        "_children_gone",
        "_claimed",
        "_closing",
        "_done_callbacks",
        "_end_error",
        "_end_reason",
        "_end_value",
        "_ended",
        "_ended_mono",
        "_failure",
        "_home",
        "_is_claimed",
        "_outcome",
        "_receipt_built",
        "_register",
        "_registry",
        "_source",
        "_started_mono",
        "_status",
        "_stopper",
        "_stragglers",
        "_threads",
        "id",
        "owner",
        "parent",
        "started_at",
        "token",
    )

    def __init__(
        self,
        run_id: str,
        owner: object,
        token: CancelToken,
        parent: Run[Any] | None,
        registry: Registry,
        register: Callable[[], Awaitable[CancelReason | None]] | None = None,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._register = register
        self.id = run_id
        self.owner = owner
        self.token = token
        self.parent = parent
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        # Who stopped it (Run.cancel's source, the calling thread), named when a
        # receipt is read: two fields, not a tuple (one object less per Stop for
        # the collector, at a shutdown that stops thousands).
        self._source: str | None = None
        self._stopper: threading.Thread | None = None
        self._receipt_built: StopReceipt | None = None
        self._ended_mono = 0.0  # time.monotonic() of its end, once it has ended
        self._stragglers: tuple[str, ...] = ()
        self._children: set[OwnedTask[Any] | Run[Any]] | None = None
        self._closing = False
        self._children_gone: Waiter | None = None
        self._failure: BaseException | None = None
        # How it ended (status None: it has not); the outcome is made from these
        # when asked for, and held weakly (see cancelkit._outcome).
        self._status: RunStatus | None = None
        self._end_reason: CancelReason | None = None
        self._end_value: T | None = None
        self._end_error: BaseException | None = None
        self._outcome: weakref.ref[RunOutcome[T]] | None = None
        self._ended: Completion | None = None  # made by the first waiter
        self._is_claimed = register is None
        self._claimed = DONE if register is None else Completion()
        self._done_callbacks: list[Callable[[Run[T]], object]] | None = None
        self._threads: ThreadQuota | None = None  # a top-level run's, see thread_quota()
        # The ident of the thread it ends in, for an async run (its loop's: set as
        # its task starts); None for a sync run (see wait()).
        self._home: int | None = None

    def __repr__(self) -> str:
        return f"<Run {self.id!r} {self.status}>"

    @property
    def status(self) -> RunStatus:
        """``running``, ``cancelling`` (asked to stop, still unwinding), then how it ended."""
        status = self._status
        if status is not None:
            return status
        return "cancelling" if self.token.cancelled else "running"

    @property
    def reason(self) -> CancelReason | None:
        """Why the run was stopped (kind ``error`` for a failed run), else ``None``."""
        if self._status is not None:
            return self._end_reason
        return self.token.reason

    def done(self) -> bool:
        """Whether the run has ended, children included (as ``asyncio.Task.done()``)."""
        return self._status is not None

    @property
    def outcome(self) -> RunOutcome[T] | None:
        """How the run ended, or ``None`` while it runs."""
        held = self._outcome
        outcome = held() if held is not None else None
        if outcome is None and self._status is not None:
            outcome = RunOutcome(
                self.id,
                self._status,
                self._end_reason,
                self._end_value,
                self._end_error,
                self._partial,
                self,
            )
            self._outcome = weakref.ref(outcome)
        return outcome

    @property
    def ended_at(self) -> float | None:
        """When the run ended (``time.time()``, from the clock it started on), or
        ``None`` while it runs."""
        if self._status is None:
            return None
        return self.started_at + (self._ended_mono - self._started_mono)

    @property
    def children(self) -> list[OwnedTask[Any] | Run[Any]]:
        """Tasks and runs started inside this run that are still running."""
        return list(self._children or ())

    @property
    def stragglers(self) -> list[str]:
        """The children still running when the run ended, past its children's grace."""
        return list(self._stragglers)

    def cancel(self, reason: CancelReason | None = None, *, source: str | None = None) -> bool:
        """Stop the run and everything it started; safe from any task or thread.

        Args:
            reason: why (default kind ``user``).
            source: where the Stop comes from, for the receipt (``Run.cancel`` by
                default); the receipt adds the thread that called.

        Returns:
            True if this call cancelled the run (it will end ``cancelled``); False
            if it had already finished or been cancelled.
        """
        won = self.token.cancel(reason)
        if won:
            self._source = source
            self._stopper = threading.current_thread()
        return won

    @property
    def receipt(self) -> StopReceipt | None:
        """The Stop receipt, once the run has ended (see :class:`StopReceipt`)."""
        return None if self._status is None else self._receipt()

    def _receipt(self) -> StopReceipt:
        built = self._receipt_built
        if built is not None:
            return built
        status = self._status
        assert status is not None
        asked = self.token.cancelled_at
        # The run's own end is the last layer to stop (kept as two fields, not an
        # entry, as every run ends).
        layers = self._layer_stops(
            self.started_at,
            self._started_mono,
            asked,
            (self._ended_mono, "run", self.id, status, None, None, False, ""),
        )
        input_tokens = output_tokens = 0
        estimated = False
        for layer in layers:
            if layer.output_tokens is not None and layer.layer in ("stream", "child run"):
                input_tokens += layer.input_tokens or 0
                output_tokens += layer.output_tokens
                estimated = estimated or layer.estimated
        wall = self.started_at - self._started_mono
        built = self._receipt_built = StopReceipt(
            self.id,
            status,
            self._end_reason,
            self._stop_source() if asked is not None else None,
            self.started_at,
            None if asked is None else wall + asked,
            self.started_at + (self._ended_mono - self._started_mono),
            layers,
            self._tools_started,
            self._tools_finished,
            self._tools_prevented,
            input_tokens,
            output_tokens,
            estimated,
        )
        return built

    def _stop_source(self) -> str:
        if self._stopper is not None:
            return f"{self._source or 'Run.cancel'} in thread {self._stopper.name}"
        reason = self.token.reason
        kind = reason.kind if reason is not None else "user"
        return {
            "timeout": "the run's deadline",
            "budget": "the budget",
            "parent": "the parent run",
            "error": "a failure in the run",
        }.get(kind, "the run's token")

    def thread_quota(self) -> ThreadQuota:
        """This top-level run's share of the worker threads, shared with its child
        runs (see :class:`~cancelkit._threads.QuotaSource`); made on first use."""
        quota = self._threads
        if quota is None:
            quota = self._threads = ThreadQuota(self._registry.threads_per_run)
        return quota

    def add_done_callback(self, callback: Callable[[Run[T]], object]) -> None:
        """Call ``callback(run)`` once the run has ended (children included), in the
        loop's thread; at once if it already has. As ``asyncio.Future``'s: how other
        objects (a registry, a web layer) learn of a run's end. A callback's error is
        logged, never breaks the run's ending.
        """
        if self._status is not None:
            callback(self)
        elif self._done_callbacks is None:
            self._done_callbacks = [callback]
        else:
            self._done_callbacks.append(callback)

    async def claimed(self) -> bool:
        """Wait until the run's id is claimed in the registry's shared backend, so any
        process finds it (at once without a backend); the run's first step.

        Returns:
            True once the id is claimed; False if the run ended without claiming it
            (the id was used before, or the backend could not be reached: see its
            outcome's ``error``).
        """
        await self._claimed.wait()
        return self._is_claimed

    async def wait(self) -> RunOutcome[T]:
        """Wait for the run to end, children included; never raises its error."""
        if self._status is None:
            await wait_ended(self)
        outcome = self.outcome
        assert outcome is not None
        return outcome

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds, not interrupted by cancellation."""
        return await wait_ended_shielded(self, timeout)

    async def result(self) -> T:
        """Wait for the run and return its value.

        Raises:
            RunCancelled: the run was cancelled; ``.reason`` says why.
            Exception: the error the run failed with.
        """
        outcome = await self.wait()
        return outcome.result()

    async def _body(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        error: BaseException | None = None
        try:
            if self._register is not None:
                await self._claim_id()
            value = await fn(*args)
        except Exception as exc:
            error = exc
            self.token._finish()  # noqa: SLF001 - a failure, not a cancel, unless one came first
            raise
        else:
            self.token._finish()  # noqa: SLF001 - decides: completed, unless a cancel won
            return value
        finally:
            if self._children:
                await self._close_children(error)
            self._closing = True

    async def _claim_id(self) -> None:
        """Claim the id in the shared backend before ``fn`` does anything; a Stop sent
        for this id before the run started wins here, and ``fn`` is never called."""
        assert self._register is not None
        register, self._register = self._register, None
        waiting = await register()
        self._is_claimed = True
        self._claimed.set()
        if waiting is not None:
            self.token.cancel(waiting)
            await checkpoint()  # the run's own cancellation is delivered here
            raise AssertionError("unreachable: a cancelled run's task passed a checkpoint")

    async def _close_children(self, error: BaseException | None) -> None:
        self._closing = True
        children = self._children
        assert children is not None
        if self.token.reason is None:  # else its cancel already reached every child token
            reason = CancelReason("error", f"the run failed: {error!r}") if error else _FINISHED
            for child in list(children):
                child.cancel(reason)
        if children:
            self._children_gone = make_waiter()
            await self._children_gone.wait_shielded(self._registry.child_grace)
            self._children_gone = None
        self._stragglers = tuple(
            child.name if isinstance(child, OwnedTask) else f"run {child.id}" for child in children
        )
        if self._stragglers:
            logger.warning(
                "cancelkit: run %s ended with children still running after %ss: %s",
                self.id,
                self._registry.child_grace,
                ", ".join(self._stragglers),
            )

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str | None) -> OwnedTask[T]:
        if self._closing or self._status is not None:
            close_all([coro])
            raise RuntimeError(f"run {self.id} is ending; it cannot start new work")
        task_name = name or f"{self.id}:{getattr(coro, '__qualname__', 'task')}"
        handle = start_task(coro, name=task_name, token=self.token.child(), owner=self)
        self._child_started(handle)
        return handle

    def _child_started(self, child: OwnedTask[Any] | Run[Any]) -> None:
        children = self._children
        if children is None:
            children = self._children = set()
        children.add(child)

    def _child_run_ended(self, child: Run[Any]) -> None:
        receipt = child._receipt()
        self._child_gone(
            child,
            (
                time.monotonic(),
                "child run",
                child.id,
                child.status,
                receipt.input_tokens,
                receipt.output_tokens,
                receipt.estimated,
                "",
            ),
        )

    def _child_gone(self, child: OwnedTask[Any] | Run[Any], entry: Entry) -> None:
        self._record(entry)
        children = self._children
        assert children is not None
        children.discard(child)
        if not children and self._children_gone is not None:
            self._children_gone.set()

    def _task_ended(self, task: OwnedTask[Any]) -> None:
        """A child task of this run ended (see :class:`TaskOwner`): it is recorded,
        and one that failed fails the run."""
        state = task._state  # noqa: SLF001
        self._child_gone(task, (time.monotonic(), "task", task.name, state, None, None, False, ""))
        if state == "failed" and self._failure is None:
            reason = CancelReason("error", f"task {task.name} failed: {task.error!r}")
            if self.token.cancel(reason):
                self._failure = task.error

    def _end_sync(self, main: OwnedTask[T]) -> None:
        """A sync run's ending (``SyncRun.finish``), in its thread: no loop, and no
        children (``spawn`` needs a loop), so nothing to wait for."""
        self._closing = True
        self._settle(main._state, main._value, main._error)  # noqa: SLF001

    def _finish(self, value: T | None, error: BaseException | None, cancelled: bool) -> None:
        """The run's task ended (it is its own task's ending, see ``Finishing``): one
        object less per run than an :class:`OwnedTask` reporting to it."""
        # The usual Stop: decide_ending's answer, without the call.
        if cancelled and self.token._reason is not None:  # noqa: SLF001
            self._settle("cancelled", None, None)
            return
        state, error = decide_ending(self.token, error, cancelled)
        self._settle(state, value, error)

    def _settle(self, state: str, value: T | None, error: BaseException | None) -> None:
        status: RunStatus
        if self._failure is not None:
            status, self._end_reason, self._end_error = "failed", self.token._reason, self._failure  # noqa: SLF001
        elif state == "completed":
            status, self._end_value = "completed", value
        elif state == "cancelled":
            # The reason is what a cancelled run reports; an error raised while it
            # unwound is dropped, or its traceback would pin every frame (and every
            # closed stream) of the run in the history. What the run chose to hand
            # back (keep_partial) is kept.
            status, self._end_reason = "cancelled", self.token._reason  # noqa: SLF001
        else:
            self._end_reason = CancelReason("error", f"{type(error).__name__}: {error}")
            status, self._end_error = "failed", error
        self._ended_mono = time.monotonic()
        self._status = status
        if self._claimed is not DONE:  # wake claimed(): it says whether the id was claimed
            self._claimed.set()
        completion = self._ended  # set_ended(), spelled out: once per run
        if completion is not None:
            self._ended = None  # its waiters hold it; later ones see the status first
            completion.set()
        # The registry knows first, then the parent, then everyone else: waiters in
        # this thread are among the callbacks, run even if the registry's backend or
        # the parent fails.
        try:
            self._registry._retire(self)  # noqa: SLF001
            if self.parent is not None:
                self.parent._child_run_ended(self)  # noqa: SLF001
        finally:
            if self._done_callbacks is not None:
                run_done_callbacks(self)


def work_context(
    token: CancelToken, run: Run[Any] | None, quota: QuotaSource | None
) -> contextvars.Context:
    """A copy of the current context for work done for ``token``: it is
    ``current_token()`` there, ``run`` the run the work belongs to (``None``: none,
    as for an object's own work in ``Background``), and ``quota`` its share of the
    worker threads. One copy, its variables set in one call."""
    context = contextvars.copy_context()
    context.run(_enter, token, run, quota)
    return context


def _enter(token: CancelToken, run: Run[Any] | None, quota: QuotaSource | None) -> None:
    _current.set(token)
    _current_run.set(run)
    _quota.set(quota)


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> OwnedTask[T]:
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

"""Acting on an event loop's tasks from anywhere: at once when safe, else queued.

A cancel may come from any thread, from a garbage-collector finalizer or a signal
handler in the middle of the loop's own code. So a request made by a task on the
loop's own thread takes effect at once, as ``asyncio.Task.cancel()`` does (the
cancelled task does not take another step first); one from another thread, from a
collection, or from between task steps is queued to the loop's thread and applied
there, many per wake-up. Each backend builds its :class:`LoopCaller` from its own
scheduling primitives (see :mod:`cancelkit._backends`).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ._exceptions import CancelReason

__all__ = ("LoopCaller", "cancel_scope", "reason_text")

T = TypeVar("T")

_collecting = False


def _gc_phase(phase: str, _info: object) -> None:
    global _collecting  # one flag for the process, as the collector is one
    _collecting = phase == "start"


gc.callbacks.append(_gc_phase)


class LoopCaller(Generic[T]):
    """Runs callbacks and cancels targets (tasks, scopes) in one loop's thread.

    Queueing is lock-free (a finalizer may interrupt this very object), and one
    wake-up carries any number of requests, so cancelling 1,000 tasks from another
    thread costs one loop iteration, not 1,000 self-pipe writes.

    Args:
        same_thread: schedules a callback from the loop's own thread.
        threadsafe: schedules a callback from any thread.
        closed: what those raise once the loop is gone.
        in_task: whether the current code runs inside one of the loop's task steps
            (anything true: yes).
        cancel_one: cancels one target with a reason (in the loop's thread).
    """

    __slots__ = (
        "__weakref__",
        "_cancel_one",
        "_closed",
        "_held",
        "_in_task",
        "_kept",
        "_pending",
        "_same_thread",
        "_scheduled",
        "_threadsafe",
        "_to_cancel",
        "thread",
    )

    def __init__(
        self,
        same_thread: Callable[[Callable[[], None]], object],
        threadsafe: Callable[[Callable[[], None]], object],
        closed: tuple[type[BaseException], ...],
        in_task: Callable[[], object],
        cancel_one: Callable[[T, CancelReason | None], None],
    ) -> None:
        self._pending: deque[Callable[[], object]] = deque()
        self._to_cancel: deque[tuple[T, CancelReason | None]] = deque()
        self._scheduled = False
        self.thread = threading.get_ident()
        """The ident of the loop's thread: where it was made, from a task of the loop,
        and updated when a task starts on the loop in another (an asyncio loop can be
        run by one thread, then another)."""
        self._same_thread = same_thread
        self._threadsafe = threadsafe
        self._closed = closed
        self._in_task = in_task
        self._cancel_one = cancel_one
        # See holding(): the thread holding, and target, reason, target, reason, ...
        # in one flat list (a tuple kept per cancel would be one more object for the
        # collector to walk, at a shutdown of thousands).
        self._held: tuple[int, list[Any]] | None = None
        # A reference to itself: a loop's caller is held only weakly by its loop's
        # entry (see PerLoop) and strongly by the tokens it stops, until they are
        # cancelled or finish; this keeps it (and what it cost to make) between one
        # run and the next, until the collector finds it unused. A cycle, not a
        # strong entry: the loop is never kept alive by it.
        self._kept = self

    def __call__(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` soon in the loop's thread (always queued)."""
        self._pending.append(callback)
        self._schedule()

    def _may_act_now(self) -> bool:
        """Whether a request may be carried out right here: on the loop's thread,
        inside a task's step (not the loop's own bookkeeping), and not inside a
        garbage collection."""
        return threading.get_ident() == self.thread and not _collecting and bool(self._in_task())

    def now_or_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` at once when that is safe, else queue it."""
        if self._may_act_now():
            callback()
        else:
            self(callback)

    def cancel(self, target: T, reason: CancelReason | None = None) -> None:
        """Cancel ``target`` with ``reason``: at once when safe, else queued and
        batched with other cancels (:meth:`cancel_many` of one)."""
        self.cancel_many((target,), reason)

    def cancel_many(self, targets: Sequence[T], reason: CancelReason | None) -> None:
        """Cancel each of ``targets`` (a cancelled tree's tasks) with ``reason``,
        asking once whether they may be cancelled at once; one failing is logged,
        the others are still cancelled."""
        thread = threading.get_ident()
        held = self._held
        if held is not None and held[0] == thread:
            # Inside holding(), in the thread that holds: its task step (the block
            # has no await), or a signal handler or a collection that interrupted it.
            pairs = held[1]
            for target in targets:
                # One extend per pair, atomic: a signal handler that cancels in
                # between cannot pair a target with another's reason.
                pairs.extend((target, reason))
            return
        # _may_act_now(), spelled out: this runs once per cancelled tree.
        if thread == self.thread and not _collecting and self._in_task():
            cancel_one = self._cancel_one
            for target in targets:
                try:
                    cancel_one(target, reason)
                except Exception:
                    logging.getLogger("cancelkit").exception(
                        "cancelkit: cancel of %r failed", target
                    )
            return
        to_cancel = self._to_cancel
        for target in targets:
            to_cancel.append((target, reason))
        if not self._scheduled:
            self._schedule()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Carry out the cancels made at once inside the block only as it ends, from
        here: for a task that cancels many (``Runs.shutdown``). They still take
        effect before that task's next await, so before any cancelled task steps.

        Why: trio delivers a cancel by raising in the task's frame then and there,
        and the exception keeps every frame of the call that cancelled alive until
        the task runs; one shallow call for all of them keeps far fewer objects for
        the garbage collector to walk.
        """
        if self._held is not None:  # nested: the outer block carries them out
            yield
            return
        held: list[Any] = []
        self._held = (threading.get_ident(), held)
        try:
            yield
        finally:
            self._held = None
            cancel_one = self._cancel_one
            pairs = iter(held)
            for target, reason in zip(pairs, pairs, strict=True):
                try:
                    cancel_one(target, reason)
                except Exception:  # as a token's callback would be: logged, never lost
                    logging.getLogger("cancelkit").exception(
                        "cancelkit: cancel of %r failed", target
                    )

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        # From a task step of the loop, in its thread, the loop is awake and runs the
        # drain soon; from anywhere else (another thread, the loop's own callbacks, a
        # thread the loop ran in before it moved) it is woken to do so.
        here = threading.get_ident() == self.thread and self._in_task()
        schedule = self._same_thread if here else self._threadsafe
        try:
            schedule(self._drain)
        except self._closed:  # the loop is gone: nothing is left to act on
            self._pending.clear()
            self._to_cancel.clear()
            self._scheduled = False

    def _drain(self) -> None:
        self._scheduled = False
        to_cancel = self._to_cancel
        cancel_one = self._cancel_one
        for _ in range(len(to_cancel)):
            cancel_one(*to_cancel.popleft())
        pending = self._pending
        while pending:
            callback = pending.popleft()
            try:
                callback()
            except Exception:
                logging.getLogger("cancelkit").exception("cancelkit: callback %r failed", callback)


def cancel_scope(scope: Any, reason: CancelReason | None) -> None:
    """``cancel_one`` for targets whose ``cancel()`` takes a reason as text (trio
    and anyio cancel scopes)."""
    scope.cancel(reason_text(reason) if reason is not None else None)


_last_text: tuple[CancelReason | None, str] = (None, "")


def reason_text(reason: CancelReason) -> str:
    """``str(reason)``, remembered for the last reason: a cancelled tree passes
    the same one for every task."""
    global _last_text  # a cache of one: the tuple is replaced whole, thread-safe
    last, text = _last_text
    if last is not reason:
        text = str(reason)
        _last_text = (reason, text)
    return text

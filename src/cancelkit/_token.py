"""``CancelToken``: a thread-safe "please stop" with a reason, for sync and async code.

A token is the one object every layer can see: a sync tool in a worker thread calls
``check()``, async code ``await``\\ s ``wait()``, a stream registers ``on_cancel`` to
close its connection. Cancelling is a single atomic transition (the first reason
wins) that can happen from any thread or from code with no event loop; waiters are
woken on their own loop.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._backends import make_waiter
from ._exceptions import Cancelled, CancelReason
from ._timers import schedule
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._backends import Waiter
    from ._timers import Deadline

__all__ = ("CancelHandle", "CancelToken", "current_token", "link")

logger = logging.getLogger("cancelkit")

_DEFAULT_REASON: Final = CancelReason("user")


class TaskStopper(Protocol):
    """What stops a token's task (a loop's :class:`~cancelkit._loop_caller.LoopCaller`)."""

    def cancel(self, target: Any, reason: CancelReason | None = None, /) -> None:
        """Cancel ``target`` (a task, a cancel scope) with ``reason``."""
        ...

    def cancel_many(self, targets: Sequence[Any], reason: CancelReason | None, /) -> None:
        """Cancel every one of ``targets`` with ``reason`` (a cancelled tree's)."""
        ...


_current: ContextVar[CancelToken | None] = ContextVar("cancelkit_current_token", default=None)


class CancelHandle:
    """The registration of one ``on_cancel`` callback; ``remove()`` takes it back."""

    __slots__ = ("_key", "_token")

    def __init__(self, token: CancelToken | None, key: int) -> None:
        self._token = token
        self._key = key

    def remove(self) -> bool:
        """Unregister the callback.

        Returns:
            True if it was still registered (so it will now never run); False if it
            has already run or was removed before.
        """
        token, self._token = self._token, None
        if token is None:
            return False
        return token._remove_callback(self._key)


_TAKEN: Final = True  # what CancelToken._undecided.pop() returns once decided
# What a decided token's _undecided becomes: one shared empty dict (nothing ever
# goes in), so a decided token no longer holds a dict of its own.
_DECIDED: Final[dict[int, None]] = {}

_keys = itertools.count()
_SHARED = -1  # the key of the shared waiter's registration (see CancelToken.wait)


class CancelToken:
    """A cancellation flag with a reason, safe across threads and event loops.

    ``cancel()`` never blocks: the first of ``cancel()`` and the end of the guarded
    work takes the decision *without waiting* (one atomic ``dict.pop``: a
    test-and-set), so ``cancel()`` is safe from a signal handler or a garbage-collector
    finalizer that interrupts this very token's own code. Registrations
    (``on_cancel``, children) take a short lock of their own and, once released,
    look whether a cancel came meanwhile and run what it could not reach.

    Args:
        timeout: seconds after which the token cancels itself with kind
            ``timeout``. All deadlines share one timer thread.

    Raises:
        TypeError, ValueError: ``timeout`` is not a finite number >= 0.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_cancelled_at",
        "_children",
        "_deadline",
        "_finished",
        "_lock",
        "_reason",
        "_stop_caller",
        "_stop_target",
        "_undecided",
        "_waiter",
        "_waiting",
    )

    def __init__(self, timeout: float | None = None) -> None:
        self._reason: CancelReason | None = None
        self._cancelled_at = 0.0  # time.monotonic() of the cancel, for receipts
        self._finished = False
        # Who decides (a cancel, or the end of the guarded work): the one whose
        # pop() finds the key (a dict's pop is atomic, and a dict of plain values is
        # not tracked by the garbage collector, unlike a lock).
        self._undecided: dict[int, None] = {0: None}
        self._lock = threading.Lock()  # guards the two registries below
        self._callbacks: dict[int, Callable[[CancelReason], object]] | None = None
        # Children are held weakly; a dropped child's reference removes itself.
        self._children: set[weakref.ref[CancelToken]] | None = None
        self._deadline: Deadline | None = None
        # The task the token stops, and what cancels it (see _arm): two slots, not
        # a callback object, as every task has one.
        self._stop_caller: TaskStopper | None = None
        self._stop_target: object = None
        self._waiter: Waiter | None = None  # one wake-up shared by a loop's waiters
        self._waiting = 0  # how many tasks wait on it
        if timeout is not None:  # most tokens have none: no validation call then
            delay = seconds(timeout, "timeout")
            if delay is not None:
                self._deadline = schedule(self, delay)

    def __repr__(self) -> str:
        state = f"cancelled ({self._reason})" if self._reason else "active"
        return f"<CancelToken {state}>"

    @property
    def cancelled(self) -> bool:
        """Whether the token has been cancelled."""
        return self._reason is not None

    @property
    def reason(self) -> CancelReason | None:
        """Why the token was cancelled, or ``None`` while it is active."""
        return self._reason

    @property
    def cancelled_at(self) -> float | None:
        """When the token was cancelled, on the ``time.monotonic()`` clock; else ``None``."""
        return self._cancelled_at if self._reason is not None else None

    def check(self) -> None:
        """Raise :class:`Cancelled` if the token is cancelled; otherwise do nothing.

        Meant for sync code (a tool in a worker thread) between units of work.

        Raises:
            Cancelled: carrying the token's reason.
        """
        if self._reason is not None:
            raise Cancelled(self._reason)

    def cancel(self, reason: CancelReason | None = None) -> bool:
        """Cancel the token, its children, and run its callbacks.

        Safe from any thread, any task, code with no event loop, a signal handler
        and a finalizer: it never waits for a lock. The first reason wins; later
        calls change nothing.

        Args:
            reason: why; defaults to ``CancelReason("user")``.

        Returns:
            True if this call cancelled the token, False if it already was, or if
            the work it guards had already finished (or passed its point of no
            return, such as a transaction's commit).

        Raises:
            TypeError: ``reason`` is not a :class:`CancelReason`.
        """
        if reason is None:
            reason = _DEFAULT_REASON
        elif not isinstance(reason, CancelReason):
            raise TypeError(f"reason must be a CancelReason, not {type(reason).__name__}")
        if self._undecided.pop(0, _TAKEN) is _TAKEN:
            return False  # cancelled or finished already
        self._undecided = _DECIDED
        now = time.monotonic()
        callbacks: list[Callable[[CancelReason], object]] = []
        stops: dict[TaskStopper, list[object]] = {}  # the tree's tasks, by their loop's caller
        pending = [self]
        # Iterative, so a deep chain of children cannot hit the recursion limit; and
        # spelled out here, as this runs once per token of a cancelled tree.
        while pending:
            token = pending.pop()
            if token is not self:
                if token._undecided.pop(0, _TAKEN) is _TAKEN:
                    continue  # cancelled or finished already
                token._undecided = _DECIDED
            token._reason = reason
            token._cancelled_at = now
            token._waiter = None
            deadline = token._deadline
            if deadline is not None:
                token._deadline = None
                deadline.discard()
            if token._callbacks is None and token._children is None:
                if token._stop_target is None:
                    continue
                if token is self:
                    # The usual cancel: a run's or a task's own token, with its task
                    # and nothing else registered: the task is stopped directly.
                    self._stop_own_task(reason)
                    return True
            token._take_registered(callbacks, pending, stops, blocking=False)
        _stop_tasks(stops, reason)
        _run_callbacks(callbacks, reason)
        return True

    def _stop_own_task(self, reason: CancelReason) -> None:
        """Stop the token's task, as a cancel's walk would (see _take_registered)."""
        if not self._lock.acquire(False):
            return  # a registration under way finds the cancel, and does this
        target = self._stop_target
        caller = self._stop_caller
        self._stop_target = self._stop_caller = None
        self._lock.release()
        if target is not None and caller is not None:
            try:
                caller.cancel_many((target,), reason)
            except Exception:
                logger.exception("cancelkit: stopping the task of %r failed", self)

    def _take_registered(
        self,
        callbacks: list[Callable[[CancelReason], object]],
        children: list[CancelToken],
        stops: dict[TaskStopper, list[object]],
        *,
        blocking: bool,
    ) -> None:
        """Move the registered callbacks, live children and the task to stop (into
        ``stops``, by its stopper) out, for a cancel.

        Without ``blocking``, a busy lock means a registration is under way (in
        another thread, or in this very thread's interrupted code): that
        registration finds the cancel once it releases the lock, and does this.
        """
        if not self._lock.acquire(blocking):
            return
        registered, self._callbacks = self._callbacks, None
        followers, self._children = self._children, None
        # _arm publishes the caller, then the target, without this lock: taken only
        # as a pair, once the target is there (else _arm finds the cancel and takes
        # them itself).
        target = self._stop_target
        caller = None
        if target is not None:
            caller = self._stop_caller
            self._stop_target = self._stop_caller = None
        self._lock.release()
        if caller is not None:
            targets = stops.get(caller)
            if targets is None:
                stops[caller] = [target]
            else:
                targets.append(target)
        if registered:
            callbacks.extend(registered.values())
        if followers:
            for ref in followers.copy():  # a C-level copy: a concurrent drop is safe
                child = ref()
                if child is not None:
                    children.append(child)

    def _after_registration(self) -> None:
        """A cancel may have come while the registry lock was held: finish its work."""
        reason = self._reason
        if reason is None:
            return
        callbacks: list[Callable[[CancelReason], object]] = []
        children: list[CancelToken] = []
        stops: dict[TaskStopper, list[object]] = {}
        self._take_registered(callbacks, children, stops, blocking=True)
        for child in children:
            child.cancel(reason)
        _stop_tasks(stops, reason)
        _run_callbacks(callbacks, reason)

    def _finish(self) -> bool:
        """Declare the guarded work over: from now on ``cancel()`` returns False.

        Atomic with ``cancel()``: exactly one of them wins, so a run that completes
        while a Stop arrives reports one outcome to both sides.

        Returns:
            True if the work finished uncancelled (now or before); False if a
            cancel won first.
        """
        if self._undecided.pop(0, _TAKEN) is _TAKEN and not self._finished:
            return False  # a cancel won
        self._undecided = _DECIDED
        self._finished = True
        with self._lock:
            self._callbacks = None
            self._stop_caller = self._stop_target = None
        self._waiter = None
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.discard()
        return True

    def _claim(self) -> bool:
        """Pass the point of no return (a commit): later cancels return False.

        Unlike :meth:`_finish` the callbacks are kept, so :meth:`_overrule` can
        still cancel for real when the commit turns out to have lost elsewhere
        (in the database, to another process's Stop).

        Returns:
            True if claimed (now or before); False if a cancel won first.
        """
        if self._undecided.pop(0, _TAKEN) is _TAKEN:
            return self._finished
        self._undecided = _DECIDED
        self._finished = True
        return True

    def _overrule(self, reason: CancelReason) -> None:
        """Cancel a claimed token after all: the claimed step was decided against."""
        if self._reason is not None:
            return
        self._finished = False
        self._reason = reason
        self._cancelled_at = time.monotonic()
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.discard()
        self._after_registration()

    def _expire(self) -> None:
        self.cancel(CancelReason("timeout", "the token's deadline passed"))

    def on_cancel(self, callback: Callable[[CancelReason], object]) -> CancelHandle:
        """Run ``callback(reason)`` when the token is cancelled.

        If the token is already cancelled the callback runs at once, in this thread.
        Otherwise it runs in whichever thread calls ``cancel()``: keep it short and
        thread-safe. An exception from it is logged and never breaks ``cancel()``.

        Returns:
            A handle whose ``remove()`` unregisters the callback.

        Raises:
            TypeError: ``callback`` is not callable.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        key = next(_keys)
        return CancelHandle(self if self._add_callback(callback, key) else None, key)

    def _add_callback(
        self, callback: Callable[[CancelReason], object], key: int | None = None
    ) -> bool:
        """``on_cancel`` without a handle (for callbacks kept until the end).

        Returns:
            Whether ``callback`` is registered (False: it has run, or never will).
        """
        if self._reason is None:
            with self._lock:
                if self._finished:
                    return False
                if self._callbacks is None:
                    self._callbacks = {}
                self._callbacks[next(_keys) if key is None else key] = callback
            self._after_registration()
            return True
        try:
            callback(self._reason)
        except Exception:
            logger.exception("cancelkit: on_cancel callback %r failed", callback)
        return False

    def _arm(self, caller: TaskStopper, target: object) -> None:
        """Have ``caller.cancel(target, reason)`` stop the token's task when the
        token is cancelled (at once if it is already): the one stopper every task
        has, kept in two slots rather than as a callback object."""
        reason = self._reason
        if reason is not None:
            caller.cancel(target, reason)
            return
        # No lock: published first (the caller before its target), then a cancel
        # looked for. A cancel in another thread sets its reason before it looks
        # for the target: it finds the target, or this finds its reason; whichever
        # takes the target under the lock (see _take_registered) stops the task.
        if self._finished:
            return  # it guards nothing any more: nothing to stop, nothing to hold
        self._stop_caller = caller
        self._stop_target = target
        if self._reason is not None:
            self._after_registration()

    def _remove_callback(self, key: int) -> bool:
        with self._lock:
            removed = self._callbacks.pop(key, None) if self._callbacks is not None else None
        # Dropped here, after the lock: the callback may hold the last reference
        # to an object whose finalizer cancels this very token.
        found = removed is not None
        del removed
        self._after_registration()
        return found

    async def wait(self) -> CancelReason:
        """Wait until the token is cancelled, without polling, on asyncio or trio.

        Returns:
            The reason it was cancelled.
        """
        reason = self._reason
        if reason is not None:
            return reason
        waiter = self._waiter
        if waiter is not None and waiter.here():
            self._waiting += 1  # only the loop that owns the shared waiter counts
            shared = True
        else:
            waiter = make_waiter()
            shared = waiter.shareable and self._share(waiter)
        if shared:
            try:
                await waiter.wait()
            finally:
                self._leave_shared(waiter)
        else:
            handle = self.on_cancel(waiter.wake)
            try:
                await waiter.wait()
            finally:
                handle.remove()
        assert self._reason is not None
        return self._reason

    def _share(self, waiter: Waiter) -> bool:
        """Make ``waiter`` the one every task of its loop waiting on the token parks
        on, registered once, so a cancel wakes them all in one call (as trio's
        ``Event.set()`` does); the last waiter to leave takes it back (see
        :meth:`_leave_shared`). Only for waiters that many tasks may share (trio's).

        Returns:
            False if another loop's waiter is shared already, or the token finished.
        """
        with self._lock:
            if self._waiter is not None or self._finished:
                return False
            self._waiter, self._waiting = waiter, 1
            if self._callbacks is None:
                self._callbacks = {}
            self._callbacks[_SHARED] = waiter.wake
        self._after_registration()
        return True

    def _leave_shared(self, waiter: Waiter) -> None:
        if self._waiter is not waiter:
            return  # cancelled or finished meanwhile: the registration is gone
        self._waiting -= 1
        if self._waiting == 0:
            self._waiter = None
            self._remove_callback(_SHARED)

    def child(self, timeout: float | None = None) -> CancelToken:
        """A new token cancelled together with this one, with the same reason.

        Cancelling the child does not touch the parent. The parent holds its
        children weakly: a child that is dropped leaves nothing behind in it.

        Args:
            timeout: an own deadline for the child, in seconds.
        """
        child = CancelToken(timeout)
        self._adopt(child)
        return child

    def _adopt(self, child: CancelToken) -> None:
        reason = self._reason
        if reason is None:
            with self._lock:
                if self._finished:
                    return  # a finished token never cancels: nothing to follow
                children = self._children
                if children is None:
                    children = self._children = set()
                children.add(weakref.ref(child, children.discard))
            self._after_registration()
            return
        child.cancel(reason)


def _stop_tasks(stops: dict[TaskStopper, list[object]], reason: CancelReason) -> None:
    """Stop the tasks a cancel took, each loop's in one call (a cancelled tree has
    one task per token, most often all on one loop)."""
    for caller, targets in stops.items():
        try:
            caller.cancel_many(targets, reason)
        except Exception:
            logger.exception("cancelkit: stopping %d task(s) failed", len(targets))


def _run_callbacks(callbacks: list[Callable[[CancelReason], object]], reason: CancelReason) -> None:
    for callback in callbacks:
        try:
            callback(reason)
        except Exception:
            logger.exception("cancelkit: on_cancel callback %r failed", callback)


def link(*tokens: CancelToken) -> CancelToken:
    """A new token cancelled as soon as any of ``tokens`` is, with that one's reason.

    Typical use: stop a tool call when either the user's Stop or the tool's own
    deadline fires. With no tokens, the result is simply a new active token.

    Raises:
        TypeError: an argument is not a :class:`CancelToken`.
    """
    for index, token in enumerate(tokens):
        if not isinstance(token, CancelToken):
            raise TypeError(f"link(): argument {index} is not a CancelToken: {token!r}")
    linked = CancelToken()
    for token in tokens:
        token._adopt(linked)
    return linked


def current_token(*, required: bool = False) -> CancelToken:
    """The token of the work this code runs for.

    Inside a :func:`to_thread` worker it is the token of that call; inside a run it
    is the run's token. Elsewhere it is a fresh token nobody else holds, so code that
    calls ``current_token().check()`` also runs fine outside cancelkit; but then a
    Stop can never reach it (a tool a framework calls in its own thread, say). Pass
    ``required=True`` where that would be a bug.

    Raises:
        RuntimeError: with ``required``, when no run or ``to_thread`` call is
            around this code.
    """
    token = _current.get()
    if token is not None:
        return token
    if required:
        raise RuntimeError(
            "current_token(required=True) outside any run and any to_thread() call: no "
            "Stop can reach this code. Run it inside Runs.start(), through "
            "cancelkit.to_thread(), or decorate the sync tool with @cancelkit.stoppable"
        )
    return CancelToken()

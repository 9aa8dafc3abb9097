"""Waiting for an ending: ``Completion``, and :func:`wait_ended` that picks the way.

Every task and run ends, and most are never awaited, so nothing for a waiter
exists until the first one comes. A waiter in the thread the ending happens in
(an async task's or run's loop: the usual case) waits among the ending's done
callbacks, which its end runs in that very thread: nothing to hand over between
threads, no lock. A waiter in another thread waits on the ending's
:class:`Completion`, made by the first such waiter (:func:`completion_of`).

``Completion.set()`` may run in another thread than its waiters (a sync run
finished by the thread that drives it, awaited from async code), and it never
takes a lock, so the two sides hand over without one: the ending side marks itself
done *before* it looks for a completion (or for waiters), a waiter is added
*before* it looks whether it has ended. Whichever side comes second sees the
other, so every waiter is woken at least once (setting a waiter twice does no harm).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from ._backends import local_wait, make_waiter

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._backends import Waiter

__all__ = (
    "DONE",
    "Completion",
    "Ending",
    "completion_of",
    "run_done_callbacks",
    "set_ended",
    "wait_ended",
    "wait_ended_shielded",
)

logger = logging.getLogger("cancelkit")

# Taken only by the first waiter of an ending, to make its completion once if two
# loops in two threads wait for the same (sync) run at the same moment.
_making = threading.Lock()


class Completion:
    """A one-shot "it has ended" that any number of tasks can await.

    ``set()`` is called once, in the loop's thread or, for a sync run, in the thread
    that drives it (a waiter is woken on its own loop); waiting may be plain or
    shielded from cancellation with a bound. Used by tasks and runs for their endings.
    """

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[Waiter] = []

    @property
    def is_set(self) -> bool:
        """Whether ``set()`` has been called."""
        return self._is_set

    def set(self) -> None:
        """Mark it ended and wake every waiter."""
        self._is_set = True  # first: a waiter added from now on sees it (see _add)
        for waiter in self._waiters.copy():  # a C-level copy: a concurrent add is safe
            waiter.set()

    def _add(self, waiter: Waiter) -> None:
        self._waiters.append(waiter)
        if self._is_set:  # set() may have read the waiters before this one was in
            waiter.set()

    async def wait(self) -> None:
        """Wait until set; cancellable."""
        if self._is_set:
            return
        waiter = make_waiter()
        waiters = self._waiters
        waiters.append(waiter)  # _add(), spelled out: once per awaited ending
        if self._is_set:
            waiter.set()
        try:
            await waiter.wait()
        finally:
            waiters.remove(waiter)

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds, ignoring cancellation; whether set."""
        if not self._is_set:
            waiter = make_waiter()
            self._add(waiter)
            try:
                await waiter.wait_shielded(timeout)
            finally:
                self._waiters.remove(waiter)
        return self._is_set


DONE = Completion()
"""A completion already set, shared by whatever starts out ended (never awaited on
a waiter: ``wait()`` returns at once)."""
DONE.set()


class Ending(Protocol):
    """Something that ends once (a task, a run), its completion made on demand."""

    _ended: Completion | None
    # The ident of the thread it ends in (None: any), and the callbacks its end runs
    # there (None once it has run them).
    _home: int | None
    _done_callbacks: list[Callable[[Any], object]] | None

    def done(self) -> bool:
        """Whether it has ended."""
        ...


async def wait_ended(ending: Ending) -> None:
    """Wait until ``ending`` (not ended yet) has ended; cancellable.

    In the thread it ends in, on a local wait among its done callbacks, taken back
    if this waiter is cancelled first; from any other thread, on its completion.
    """
    if threading.get_ident() != ending._home:  # noqa: SLF001 - the field this module reads
        await completion_of(ending).wait()
        return
    ended, wake = local_wait()
    callbacks = _listen(ending, wake)
    try:
        await ended
    finally:
        if ending._done_callbacks is callbacks:  # noqa: SLF001 - not ended: take it back
            callbacks.remove(wake)


async def wait_ended_shielded(ending: Ending, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``ending`` to end, not interrupted by
    cancellation (delivered at the next await after); whether it has ended.

    Where, as :func:`wait_ended`: in its own thread its end wakes the waiter
    directly, from its done callbacks.
    """
    if threading.get_ident() != ending._home:  # noqa: SLF001
        return await completion_of(ending).wait_shielded(timeout)
    if not ending.done():
        waiter = make_waiter()
        wake = waiter.wake
        callbacks = _listen(ending, wake)
        try:
            await waiter.wait_shielded(timeout)
        finally:
            if ending._done_callbacks is callbacks:  # noqa: SLF001
                callbacks.remove(wake)
    return ending.done()


def _listen(ending: Ending, wake: Callable[[object], None]) -> list[Callable[[Any], object]]:
    """Put ``wake`` among the done callbacks of ``ending`` (not ended; in its own
    thread): the list it is in, to take it back from while it is the ending's.

    ``wake`` is also called here if it has ended meanwhile: an asyncio loop can be
    moved to another thread (prepared with ``run_until_complete``, then run by a
    worker's ``run_forever``), and then the ending of a task started before the move
    runs in another thread than this. Its status is set before its callbacks are
    taken, this waiter's wake is put in before its status is read: whichever comes
    second sees the other (``wake`` itself is safe from any thread).
    """
    callbacks = ending._done_callbacks  # noqa: SLF001
    if callbacks is None:
        callbacks = ending._done_callbacks = [wake]  # noqa: SLF001
    else:
        callbacks.append(wake)
    if ending.done():
        wake(None)
    return callbacks


def run_done_callbacks(ending: Ending) -> None:
    """Run the done callbacks of ``ending`` (it has just ended), each once: waiters
    in its own thread are among them, so one that fails never keeps the others from
    running. An ``Exception`` is logged; any other (a ``CancelledError`` from a
    callback's own await, a ``KeyboardInterrupt``) is raised once all have run."""
    callbacks, ending._done_callbacks = ending._done_callbacks, None  # noqa: SLF001
    escaped: BaseException | None = None
    for callback in callbacks or ():
        try:
            callback(ending)
        except Exception:
            logger.exception("cancelkit: done callback %r of %r failed", callback, ending)
        except BaseException as exc:  # noqa: BLE001 - raised below, after the others
            escaped = escaped or exc
    if escaped is not None:
        raise escaped


def completion_of(ending: Ending) -> Completion:
    """The completion of ``ending``, made by its first waiter (set if it has ended)."""
    completion = ending._ended  # noqa: SLF001 - the field this module manages
    if completion is None:
        with _making:
            completion = ending._ended  # noqa: SLF001
            if completion is None:
                completion = ending._ended = Completion()  # noqa: SLF001
        if ending.done():  # it may have ended before the completion was there
            completion.set()
    return completion


def set_ended(ending: Ending) -> None:
    """Wake whoever waits on ``ending``'s completion; call once it is ``done()``
    (its done callbacks are the ending's to run)."""
    completion = ending._ended  # noqa: SLF001
    if completion is not None:
        ending._ended = None  # noqa: SLF001 - its waiters hold it; later ones see done()
        completion.set()

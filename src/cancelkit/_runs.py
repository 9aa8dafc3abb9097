"""Runs: named units of work, cancellable by id from anywhere, leaving no orphans.

The registry maps ids to active runs (and a bounded history of finished ones), so a
Stop that arrives as an id (an HTTP request, a control message, another process)
finds its run. Ownership checks make someone else's run indistinguishable from an
unknown one.

With a backend (``Runs(backend=RedisBackend(url))``, see ``cancelkit.distributed``)
the registries of several processes share one view: :meth:`Runs.stop` reaches a run
in any process, and :meth:`Runs.find` reports any process's run. :meth:`Runs.cancel`
stays local, lock-free and safe from a signal handler.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack

from ._backends import loop_caller
from ._exceptions import CancelReason
from ._ids import new_id
from ._run import Run, _current_run, work_context
from ._runs_backend import RunInfo
from ._sync_run import SyncRun, run_in_thread
from ._tasks import launch
from ._threads import DEFAULT_THREADS_PER_RUN, _quota
from ._token import CancelToken, _current
from ._validate import close_all, positive_int, seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from ._runs_backend import RunsBackend

__all__ = ("Runs",)

T = TypeVar("T")
PosArgs = TypeVarTuple("PosArgs")

logger = logging.getLogger("cancelkit")

_STOP = CancelReason("user", "stopped by id")


class Runs:
    """The registry of runs: start under an id, cancel by id, look up status.

    Args:
        history: how many finished runs are remembered for :meth:`get`.
        child_grace: seconds a run waits for its cancelled children when it ends.
        threads_per_run: worker threads one run (with its child runs) may hold at
            once through :func:`to_thread`; its further calls wait their turn.
        backend: shared with the registries of other processes (see
            ``cancelkit.distributed``). Then enter the registry (``async with runs:``)
            before starting runs; owners must be strings, and ids are never reused.
    """

    def __init__(
        self,
        *,
        history: int = 1000,
        child_grace: float = 5.0,
        threads_per_run: int = DEFAULT_THREADS_PER_RUN,
        backend: RunsBackend | None = None,
    ) -> None:
        limit = positive_int(history, "history")
        grace = seconds(child_grace, "child_grace", allow_none=False)
        per_run = positive_int(threads_per_run, "threads_per_run")
        assert limit is not None
        assert grace is not None
        assert per_run is not None
        self.child_grace = grace
        self.threads_per_run = per_run
        self._history_size = limit
        self._active: dict[str, Run[Any]] = {}
        self._history: OrderedDict[str, Run[Any]] = OrderedDict()
        self._closed = False
        self.backend = backend
        self._open = backend is None

    async def __aenter__(self) -> Runs:
        """Connect the backend, if any; on exit, :meth:`shutdown` and disconnect."""
        if self.backend is not None and not self._open:
            await self.backend.open(self)
            self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.shutdown(self.child_grace)
        finally:
            if self.backend is not None and self._open:
                self._open = False
                await self.backend.aclose()

    def __len__(self) -> int:
        """The number of active runs."""
        return len(self._active)

    @property
    def active(self) -> list[Run[Any]]:
        """The runs not yet finished.

        Reads take no lock (a dict copy is atomic), so this and :meth:`cancel` are
        safe from a signal handler that interrupts this registry's own code.
        """
        return list(self._active.copy().values())

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
            ValueError: ``run_id`` is already in use by an active run, or empty. With
                a backend, an id used before in any process fails the run with
                ``ValueError`` before ``fn`` is called.
            TypeError: ``fn`` is not callable (a coroutine object is refused too), or
                with a backend, ``owner`` is not a string.
            RuntimeError: the registry has been shut down, or its backend is not
                open (``async with runs:``).
        """
        if not callable(fn):
            close_all([fn])
            raise TypeError(
                f"start() takes an async function and its arguments, not {type(fn).__name__}"
            )
        run_id = self._admit(run_id)
        backend = self.backend
        if backend is not None:
            _shared_owner(owner)
            if not self._open:
                raise RuntimeError("open the registry's backend first: async with runs: ...")
        parent = _current_run.get()
        if parent is not None and parent._status is None and not parent._closing:  # noqa: SLF001
            token = parent.token.child(timeout)
        else:
            parent = None
            token = CancelToken(timeout)
        register = None
        if backend is not None:
            shared_id, shared_owner = run_id, owner if isinstance(owner, str) else None

            def register() -> Awaitable[CancelReason | None]:
                return backend.register(shared_id, shared_owner)

        run: Run[T] = Run(run_id, owner, token, parent, self, register)
        self._register(run)
        # A top-level run holds its own share of the worker threads (made when first
        # used); children share it.
        quota = run if parent is None else _quota.get()
        try:
            run._home = launch(  # noqa: SLF001
                run._body(fn, args),  # noqa: SLF001
                name=f"run:{run_id}",
                token=token,
                ending=run,  # its task's end settles it
                context=work_context(run.token, run, quota),
            )
        except BaseException:
            del self._active[run_id]  # never started: it never ends to remove itself
            raise
        if backend is not None:
            token.on_cancel(lambda reason: backend.note_cancelled(run_id, reason))
        if parent is not None:
            parent._child_started(run)  # noqa: SLF001
        return run

    def start_sync(
        self, *, run_id: str | None = None, owner: object = None, timeout: float | None = None
    ) -> SyncRun[Any]:
        """Start a run that the calling thread drives, with no event loop.

        For sync code whose work is more than one call (a WSGI response produced
        after the app returns): ``sync_run.call(fn, *args)`` runs code inside the
        run, ``sync_run.finish(...)`` ends it. For one function, :meth:`run_sync`.
        In a thread whose ``current_token()`` is a token (a ``to_thread`` worker,
        another sync run), the run's token is its child: that Stop reaches this run.

        Raises:
            ValueError: ``run_id`` is already in use by an active run, or empty.
            TypeError: ``run_id`` is not a str.
            RuntimeError: the registry has been shut down, or has a backend (sync
                runs are local to this process for now).
        """
        run_id = self._admit(run_id)
        if self.backend is not None:
            raise RuntimeError(
                "sync runs are not shared through a backend yet; use a Runs() without one"
            )
        ambient = _current.get()
        token = ambient.child(timeout) if ambient is not None else CancelToken(timeout)
        run: Run[Any] = Run(run_id, owner, token, None, self)
        self._register(run)
        return SyncRun(run)

    def run_sync(
        self,
        fn: Callable[[Unpack[PosArgs]], T],
        *args: *PosArgs,
        run_id: str | None = None,
        owner: object = None,
        timeout: float | None = None,
    ) -> T:
        """Run the sync ``fn(*args)`` as a run, in the calling thread; no event loop.

        Inside ``fn``, ``current_token()`` is the run's token: ``runs.cancel(run_id)``
        from any thread cancels it, ``fn`` sees it at its next ``check()`` (a guarded
        sync stream at once), and the run ends ``cancelled``. ``runs.get(run_id)``
        gives its status and reason, during and after, as for an async run; its
        outcome has a Stop receipt.

        Args:
            fn: a sync function.
            *args: its positional arguments.
            run_id: the id; by default an unguessable one is made.
            owner: who may cancel it by id (see :meth:`cancel`).
            timeout: seconds after which the run is cancelled with kind ``timeout``.

        Returns:
            What ``fn`` returned.

        Raises:
            RunCancelled: the run was cancelled (``.reason`` says why), whatever
                ``fn`` raised or returned meanwhile.
            Exception: what ``fn`` raised.
            TypeError, ValueError, RuntimeError: as :meth:`start_sync`, or ``fn`` is
                not callable or is a coroutine function; before ``fn`` is called.
        """
        if not callable(fn) or inspect.iscoroutinefunction(fn):
            what = "a coroutine function" if callable(fn) else type(fn).__name__
            raise TypeError(f"run_sync() takes a sync function and its arguments, not {what}")
        sync_run: SyncRun[T] = self.start_sync(run_id=run_id, owner=owner, timeout=timeout)
        return run_in_thread(sync_run, fn, args)

    def _admit(self, run_id: str | None) -> str:
        """A valid id for a new run (made if ``None``); the registry must be open."""
        if run_id is None:
            run_id = new_id()
        elif not isinstance(run_id, str):
            raise TypeError(f"run_id must be a str, not {type(run_id).__name__}")
        elif not run_id:
            raise ValueError("run_id must not be empty")
        if self._closed:
            raise RuntimeError("this Runs registry has been shut down")
        return run_id

    def _register(self, run: Run[Any]) -> None:
        # setdefault: one atomic test-and-insert, no lock (a run ends, and leaves
        # the map, only after it was in it; see _retire).
        if self._active.setdefault(run.id, run) is not run:
            run.token.cancel()
            raise ValueError(f"a run with id {run.id!r} is already active")

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
        return self._cancel(run_id, reason, owner, "Runs.cancel")

    def _cancel(self, run_id: str, reason: CancelReason | None, owner: object, source: str) -> bool:
        run = self._active.get(run_id)  # no lock: safe from a signal handler
        if run is None or (owner is not None and run.owner != owner):
            return False
        return run.cancel(reason, source=source)

    async def stop(
        self, run_id: str, reason: CancelReason | None = None, owner: str | None = None
    ) -> bool:
        """Cancel a run wherever it lives: in this process, else through the backend.

        A run of this process is cancelled here, with no round trip. Without a
        backend this is :meth:`cancel`.

        Returns:
            As :meth:`cancel`: ``True`` if this call stopped a running run. With a
            backend, a Stop for an id no run has yet is kept and wins when that
            owner's run starts under the id (``False`` is returned: nothing was
            running).

        Raises:
            BackendUnavailable: the run is not here and the backend cannot be
                reached; the Stop was not delivered.
        """
        reason = reason or _STOP
        if self.backend is None or run_id in self._active or run_id in self._history:
            return self._cancel(run_id, reason, owner, "Runs.stop")
        _shared_owner(owner)
        return await self.backend.cancel(run_id, reason, owner)

    async def find(self, run_id: str, owner: str | None = None) -> RunInfo | None:
        """How a run is doing, or how it ended, wherever it lives.

        Returns:
            ``None`` for an unknown id and for someone else's run alike.

        Raises:
            BackendUnavailable: the run is not here and the backend cannot be reached.
        """
        run = self.get(run_id, owner)
        if run is not None:
            worker = self.backend.worker if self.backend is not None else None
            shared = run.owner if isinstance(run.owner, str) else None
            return RunInfo(
                run.id, run.status, run.reason, shared, worker, run.started_at, run.ended_at
            )
        if self.backend is None or run_id in self._active or run_id in self._history:
            return None
        _shared_owner(owner)
        return await self.backend.info(run_id, owner)

    def active_ids(self) -> list[str]:
        """The ids of the runs not yet finished (for a backend's resync)."""
        return list(self._active.copy())

    def cancel_here(self, run_id: str, reason: CancelReason) -> bool:
        """Cancel a run of this process (a backend delivering a Stop)."""
        return self._cancel(run_id, reason, None, "a Stop from another process, delivered")

    def get(self, run_id: str, owner: object = None) -> Run[Any] | None:
        """An active or remembered run by id (``None`` if unknown or not ``owner``'s)."""
        run = self._active.get(run_id) or self._history.get(run_id)
        if run is None or (owner is not None and run.owner != owner):
            return None
        return run

    def _retire(self, run: Run[Any]) -> None:
        # No lock: each step is one atomic dict operation. Into the history first,
        # then out of the active runs, so a lookup from another thread meanwhile
        # finds it in one or the other. Only this run's own end removes its entry,
        # and no other run can take the id while it is there.
        history = self._history
        history.pop(run.id, None)  # an id used again counts as new
        history[run.id] = run
        active = self._active
        if active.get(run.id) is run:
            del active[run.id]
        if len(history) > self._history_size:
            try:  # noqa: SIM105 - not suppress(): a context manager per run ended
                history.popitem(last=False)
            except KeyError:  # emptied meanwhile by runs ending in other threads
                pass
        if self.backend is not None:
            self.backend.note_ended(run.id, run.status, run.reason)

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
        with loop_caller().holding():  # one shallow call cancels all their tasks
            for run in runs:
                run.cancel(reason, source="Runs.shutdown")
        deadline = time.monotonic() + limit
        stragglers = [
            run.id
            for run in runs
            if run._status is None  # noqa: SLF001 - done(), read for each of thousands
            and not await run.wait_shielded(max(0.0, deadline - time.monotonic()))
        ]
        if stragglers:
            logger.warning(
                "cancelkit: runs still running %ss after shutdown: %s",
                limit,
                ", ".join(stragglers),
            )
        return stragglers


def _shared_owner(owner: object) -> None:
    """An owner that crosses processes is a string (or ``None``: anyone)."""
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise TypeError(f"with a backend, owner must be a non-empty str or None, not {owner!r:.60}")

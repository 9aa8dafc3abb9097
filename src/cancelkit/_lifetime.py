"""Nothing outlives its owner: child processes and folders that go with the process
that made them, however it ends (a SIGKILL included, which no handler sees).

Two guards, both from the kernel rather than from a handler of the owner:

- :func:`tied_to_this_process` (a child's ``preexec_fn``): the kernel signals the
  child when its parent exits (Linux's ``PR_SET_PDEATHSIG``);
- :class:`FolderWatchdog`: a small watchdog process waits for the end of a
  pipe whose other end only the owner holds. The kernel closes that end however the
  owner ends; the watchdog then runs a stop command and removes a folder (a
  throwaway server's socket, data and log).

And one shape for what a ``with`` block owns: :class:`StoppedWithItsBlock` starts on
entry and stops however the block ends, a start that fails included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path
    from types import TracebackType

__all__ = (
    "FolderWatchdog",
    "StoppedWithItsBlock",
    "end_process",
    "set_parent_death_signal",
    "tied_to_this_process",
)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """Linux's ``prctl``, looked up in this process (never after a fork: the loader's
    lock may be held there by a thread the fork did not copy)."""
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits (strictly:
    when the parent's thread that started it exits). Linux only; elsewhere, and where
    ``prctl`` cannot be called, nothing."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def tied_to_this_process(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for a child process that must not outlive this one: the
    kernel sends it ``sig`` when this process (the thread that starts it) exits, and
    it exits at once if this process is already gone by the time it could ask.

    Start the child from a thread that lives as long as the child should (the main
    thread, typically).
    """
    prctl = _prctl()
    parent = os.getpid()

    def in_the_child() -> None:  # pragma: no cover - runs in the child, before exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # it died before the signal was asked for
            os._exit(1)

    return in_the_child


# $1 is the folder, the rest the stop command. `cat` returns at the end of stdin: the
# owner closed it, or ended (the kernel closed it).
_WATCH = 'folder=$1; shift; cat >/dev/null; [ "$#" -gt 0 ] && "$@"; rm -rf -- "$folder"'


class FolderWatchdog:
    """Removes ``folder`` (after running the command ``stop``, if given) once its
    owner, the process that made this, ends however it ends, or calls
    :meth:`release`. The folder is named by the caller and must be one only this
    owner uses (a ``tempfile.mkdtemp()``).

    The pipe's end is held until :meth:`release` or the process's end, not by this
    object alone: dropped unreleased, the folder stays until the process ends. A
    child forked without exec (``multiprocessing``'s default on Linux) closes its copy
    at once, so it neither keeps the folder nor removes it.
    """

    def __init__(self, folder: Path, stop: Sequence[str] = ()) -> None:
        self.folder = folder
        self._owner = os.getpid()
        self._process = subprocess.Popen(  # noqa: S603 - our own script and arguments
            ["/bin/sh", "-c", _WATCH, "cancelkit-watchdog", str(folder), *stop],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the owner's group does not cut it short
        )
        assert self._process.stdin is not None
        self._pipe = self._process.stdin.fileno()
        _unreleased.add(self)

    def release(self, timeout: float = 60.0) -> None:
        """Stop and remove now, and wait for it (up to ``timeout`` seconds; then the
        watchdog's whole group is killed and the folder removed from here)."""
        _unreleased.discard(self)
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()  # what the owner's end does too
        if os.getpid() != self._owner:
            return  # a forked child's copy: the owner's to release
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:  # a stop command that hangs
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            shutil.rmtree(self.folder, ignore_errors=True)


# Every watchdog not yet released: their pipes stay open as long as the process lives
# (a watchdog dropped in a reference cycle would otherwise close its pipe when
# collected, and remove a folder its server still uses).
_unreleased: set[FolderWatchdog] = set()


def _close_in_forked_child() -> None:
    """In a child forked without exec, close the copies of the watchdogs' pipes: the
    owner's end alone counts (else a forked worker keeps a folder after its owner).

    Each copy's descriptor is pointed at ``/dev/null`` (``dup2``): no lock is taken,
    as a thread of the parent may have held a file object's own lock at the fork, and
    the file object, closed later in the child, closes ``/dev/null``, not a number
    since reused for something else."""
    if not _unreleased:
        return
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for watchdog in _unreleased:
                os.dup2(null, watchdog._pipe)  # noqa: SLF001 - this module's own object
        finally:
            os.close(null)
    _unreleased.clear()


os.register_at_fork(after_in_child=_close_in_forked_child)


def end_process(process: subprocess.Popen[Any], grace: float = 5.0) -> tuple[Any, Any]:
    """End ``process``: SIGTERM, then SIGKILL if it still runs ``grace`` seconds later.
    Waits for it, reading what it still writes to its pipes (so a full pipe cannot
    keep it from ending), and returns that, as ``communicate()`` does."""
    process.terminate()
    try:
        return process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


class StoppedWithItsBlock:
    """Base of a throwaway server: ``with server:`` calls ``start()``, and ``stop()``
    however the block ends. A ``start()`` that fails is stopped at once (there is no
    ``__exit__`` then), so what it began (a thread, a folder, a process) goes too:
    ``stop()`` must accept a server that is half started, or not at all."""

    def start(self) -> object:
        """Start serving; returns once ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop and release everything; idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

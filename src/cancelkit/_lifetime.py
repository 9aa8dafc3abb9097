"""Nothing outlives its owner: child processes and folders that go with the process
that made them, however it ends (a SIGKILL included, which no handler sees).

Two guards, both from the kernel rather than from a handler of the owner:

- :func:`die_with_parent` (a child's ``preexec_fn``): the kernel signals the child
  when its parent exits (Linux's ``PR_SET_PDEATHSIG``);
- :class:`FolderWatchdog`: a small watchdog process waits for the end of a
  pipe whose other end only the owner holds. The kernel closes that end however the
  owner ends; the watchdog then runs a stop command and removes a folder (a
  throwaway server's socket, data and log).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ("FolderWatchdog", "die_with_parent", "set_parent_death_signal")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits (strictly:
    when the parent's thread that started it exits). Linux only; elsewhere, and where
    ``prctl`` cannot be called, nothing."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """A ``preexec_fn`` for a child process that must not outlive its parent: it is
    killed (SIGKILL) when the parent exits."""
    set_parent_death_signal(signal.SIGKILL)


# $1 is the folder, the rest the stop command. `cat` returns at the end of stdin: the
# owner closed it, or ended (the kernel closed it).
_WATCH = 'folder=$1; shift; cat >/dev/null; [ "$#" -gt 0 ] && "$@"; rm -rf -- "$folder"'


class FolderWatchdog:
    """Removes ``folder`` (after running the command ``stop``, if given) once its
    owner, the process that made this, ends however it ends, or calls
    :meth:`release`. The folder is named by the caller and must be one only this
    owner uses (a ``tempfile.mkdtemp()``)."""

    def __init__(self, folder: Path, stop: Sequence[str] = ()) -> None:
        self.folder = folder
        self._process = subprocess.Popen(  # noqa: S603 - our own script and arguments
            ["/bin/sh", "-c", _WATCH, "cancelkit-watchdog", str(folder), *stop],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the owner's group does not cut it short
        )

    def release(self, timeout: float = 60.0) -> None:
        """Stop and remove now, and wait for it (up to ``timeout`` seconds)."""
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()  # what the owner's end does too
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

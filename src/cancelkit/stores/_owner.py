"""Who holds a run: the process that began it, named so a later process can tell
whether it is still alive.

A ledger row that says ``running`` is a promise that some process is still working
on the run. After a crash (SIGKILL, power loss) nobody keeps that promise, so each
row names its owner (host, process id and the process's start time, so a reused
pid is not mistaken for the owner) and carries a lease. A store reconciles at
``setup()``: a row whose owner on this host is gone, or whose lease has expired,
ends ``cancelled`` with kind ``shutdown``; its staged writes were never applied.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

__all__ = ("is_gone", "this_process")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie has ended; only its parent has not reaped it
        return None
    return fields[19]  # field 22 of the whole line: starttime


@functools.cache
def this_process() -> str:
    """This process as an owner: ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '-'}"


def is_gone(owner: str | None) -> bool:
    """Whether ``owner`` (from :func:`this_process`) is a process of this host that
    has ended. Owners on other hosts are never judged here: their lease decides."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if start != "-":
        return _start_time(pid) != start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

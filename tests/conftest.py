"""Every async test of the core runs on asyncio and on trio.

And no process the test session started outlives it: at the end of the session, a
process still alive that descends from pytest, or that carries this session's mark in
its environment (inherited by everything started from it, even once orphaned and
reparented to init), fails the session, and is then killed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

import pytest

pytest_plugins = ("tests.services",)

SESSION_MARK = "CANCELKIT_TEST_SESSION"
# Seconds processes get to finish exiting when the session ends.
LEFTOVER_GRACE = float(os.environ.get("CANCELKIT_LEFTOVER_GRACE", "10"))


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, state), from /proc."""
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        state, parent = text[text.rindex(")") + 2 :].split()[:2]
        found[int(entry.name)] = (int(parent), state)
    return found


def _marked(pid: int, mark: bytes) -> bool:
    try:
        return mark in (Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False  # gone, or not ours to read


def leftovers(mark: str, root: int) -> dict[int, str]:
    """Live processes (not zombies) started from ``root`` or carrying ``mark``: pid -> command."""
    table = _processes()
    needle = f"{SESSION_MARK}={mark}".encode()
    found: dict[int, str] = {}
    for pid, (parent, state) in table.items():
        if pid == root or state in ("Z", "X"):
            continue
        ancestor, descends = parent, False
        for _ in range(64):
            if ancestor == root:
                descends = True
                break
            if ancestor <= 1 or ancestor not in table:
                break
            ancestor = table[ancestor][0]
        if descends or _marked(pid, needle):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            found[pid] = command.decode(errors="replace").strip()
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    if Path("/proc/self/stat").exists():
        os.environ[SESSION_MARK] = secrets.token_hex(8)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    mark = os.environ.get(SESSION_MARK)
    if mark is None:
        return
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (alive := leftovers(mark, os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not alive:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  {pid}: {command}" for pid, command in sorted(alive.items())]
    message = "processes started by the tests outlived them (now killed):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    for pid in alive:
        with contextlib.suppress(OSError):  # it may have ended just now
            os.kill(pid, signal.SIGKILL)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""Folders and processes that go with their owner, however it ends (cancelkit._lifetime).

A throwaway server's folder (socket, data, log) is removed by a watchdog process once
the process that made it ends: by its own release, or by a SIGTERM or SIGKILL that no
handler of the owner sees. ``RedisServer`` uses it, so a killed owner leaves neither
redis-server nor its folder behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cancelkit._lifetime import FolderWatchdog, StoppedWithItsBlock, end_process
from cancelkit.distributed import RedisServer

from .helpers import alive
from .web.conftest import gone_within

if TYPE_CHECKING:
    from collections.abc import Callable

# Makes a folder (with a file in it) guarded by a watchdog whose stop command writes
# a marker outside it, says where, then waits to be killed.
OWNS_A_FOLDER = """
import sys, tempfile, time
from pathlib import Path
from cancelkit._lifetime import FolderWatchdog

folder = Path(tempfile.mkdtemp(prefix="ck-test-lifetime-"))
(folder / "data").write_text("x")
FolderWatchdog(folder, ["/bin/sh", "-c", "echo stopped > " + sys.argv[1]])
print(folder, flush=True)
time.sleep(120)
"""

# Starts a RedisServer of its own folder, says its pid and folder, then waits.
OWNS_A_REDIS = """
import time
from cancelkit.distributed import RedisServer

server = RedisServer()
server.start()
print(server.process.pid, server.directory, flush=True)
time.sleep(120)
"""


# Starts a child tied to it, says the child's pid, then waits.
TIES_A_CHILD = """
import signal, subprocess, time
from cancelkit._lifetime import tied_to_this_process

child = subprocess.Popen(["sleep", "120"], preexec_fn=tied_to_this_process(signal.SIGTERM))
print(child.pid, flush=True)
time.sleep(120)
"""

# What scripts/test and scripts/demo do before their last command: a tool run tied.
SCRIPT_RUNS_A_TOOL = """
source scripts/_env.sh
tied bash -c 'echo $$; exec sleep 120'
"""


def _gone_within(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_released_watchdog_runs_the_stop_command_then_removes_the_folder(
    tmp_path: Path,
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ck-test-lifetime-"))
    (folder / "data").write_text("x")
    marker = tmp_path / "stopped"
    # The stop command sees the folder still there: it runs first.
    check = f"test -f {folder}/data && echo stopped > {marker}"
    watchdog = FolderWatchdog(folder, ["/bin/sh", "-c", check])
    time.sleep(0.2)
    assert folder.exists(), "removed while its owner was still running"
    watchdog.release()
    assert not folder.exists()
    assert marker.read_text() == "stopped\n"
    watchdog.release()  # a second release changes nothing


def _first_line_then_end(
    argv: list[str], how: str, there: Callable[[list[str]], bool], cwd: Path | None = None
) -> list[str]:
    """Run an owner that prints what it made on its first line, check that it is
    ``there`` while the owner lives, then end the owner with ``how``: the line's words."""
    with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True) as owner:
        try:
            assert owner.stdout is not None
            made = owner.stdout.readline().split()
            assert there(made), f"{made} is not there while its owner lives"
            return made
        finally:
            owner.send_signal(getattr(signal, how))
            owner.wait(30)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_folder_goes_when_its_owner_is_killed(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "stopped"
    argv = [sys.executable, "-c", OWNS_A_FOLDER, str(marker)]
    (made,) = _first_line_then_end(argv, how, lambda made: Path(made[0], "data").exists())
    assert _gone_within(Path(made), 10), f"{made} outlived its owner's {how}"
    assert marker.read_text() == "stopped\n"


def test_a_redis_server_and_its_folder_go_when_its_owner_is_killed() -> None:
    pid, folder = _first_line_then_end(
        [sys.executable, "-c", OWNS_A_REDIS],
        "SIGKILL",
        lambda made: alive(int(made[0])) and Path(made[1], "redis.sock").exists(),
    )
    assert gone_within(int(pid), 10), "redis-server outlived its owner's SIGKILL"
    assert _gone_within(Path(folder), 10), f"{folder} outlived its owner's SIGKILL"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("owner", ["a program", "a script"])
def test_a_child_tied_to_its_owner_ends_with_it(owner: str, how: str) -> None:
    def running(made: list[str]) -> bool:
        return alive(int(made[0]))

    if owner == "a program":
        (child,) = _first_line_then_end([sys.executable, "-c", TIES_A_CHILD], how, running)
    else:  # a tool run by scripts/test or scripts/demo
        repo = Path(__file__).parent.parent
        argv = ["bash", "-c", SCRIPT_RUNS_A_TOOL]
        (child,) = _first_line_then_end(argv, how, running, cwd=repo)
    assert gone_within(int(child), 10), f"the child outlived its owner's {how}"


def test_a_forked_child_neither_keeps_the_folder_nor_removes_it() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ck-test-lifetime-"))
    watchdog = FolderWatchdog(folder)
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked child: lives on, then ends
        time.sleep(3)
        os._exit(0 if folder.exists() else 1)
    try:
        time.sleep(0.2)
        assert folder.exists(), "the forked child's start removed it"
        started = time.monotonic()
        watchdog.release(timeout=10)
        assert not folder.exists()
        assert time.monotonic() - started < 2.5  # not held until the child ends
    finally:
        _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 1  # the child saw it removed, by the owner


# Drops a watchdog in a reference cycle, collects it, says whether the folder is
# still there, then ends (and so releases it).
DROPS_A_WATCHDOG = """
import gc, tempfile, time
from pathlib import Path
from cancelkit._lifetime import FolderWatchdog

folder = Path(tempfile.mkdtemp(prefix="ck-test-lifetime-"))
watchdog = FolderWatchdog(folder)
watchdog.cycle = watchdog
del watchdog
gc.collect()
time.sleep(1)  # time enough for a watchdog woken by a closed pipe to remove it
print(folder, folder.exists(), flush=True)
"""


def test_a_dropped_watchdog_keeps_the_folder_until_its_owner_ends() -> None:
    out = subprocess.run(
        [sys.executable, "-c", DROPS_A_WATCHDOG], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "True", "removed while its owner was still running"
    assert _gone_within(Path(out[0]), 10), "left after its owner ended"


def test_a_redis_server_that_fails_to_start_leaves_no_folder_and_no_watchdog() -> None:
    server = RedisServer()
    server.binary = "/bin/false"  # exits at once
    with pytest.raises(RuntimeError, match="exited at start"), server:
        pass
    assert not server.directory.exists()
    watchdog = server._watchdog
    assert watchdog is not None
    assert watchdog._process.poll() is not None


class _HalfStarting(StoppedWithItsBlock):
    """A server whose start fails half-way, after it began something."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.began = self.stopped = 0

    def start(self) -> None:
        self.began += 1
        if self.fail:
            raise RuntimeError("half started")

    def stop(self) -> None:
        self.stopped += 1


def test_a_block_starts_its_server_and_stops_it_however_it_ends() -> None:
    server = _HalfStarting(fail=False)
    with pytest.raises(ValueError, match="inside"), server as entered:
        assert entered is server
        assert (server.began, server.stopped) == (1, 0)
        raise ValueError("inside")
    assert (server.began, server.stopped) == (1, 1)


def test_a_start_that_fails_is_stopped_at_once() -> None:
    server = _HalfStarting(fail=True)
    with pytest.raises(RuntimeError, match="half started"), server:
        pytest.fail("the block ran after a failed start")
    assert (server.began, server.stopped) == (1, 1)


def test_end_process_terminates_and_returns_what_the_process_still_said() -> None:
    script = "import signal, sys, time\nprint('up', flush=True)\ntime.sleep(60)"
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == b"up\n"
        said, _ = end_process(process)
    assert process.returncode == -signal.SIGTERM
    assert said == b""


def test_end_process_kills_what_ignores_its_sigterm() -> None:
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == b"up\n"
        end_process(process, grace=0.2)
    assert process.returncode == -signal.SIGKILL

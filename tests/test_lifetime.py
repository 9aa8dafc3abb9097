"""Folders and processes that go with their owner, however it ends (cancelkit._lifetime).

A throwaway server's folder (socket, data, log) is removed by a watchdog process once
the process that made it ends: by its own release, or by a SIGTERM or SIGKILL that no
handler of the owner sees. ``RedisServer`` uses it, so a killed owner leaves neither
redis-server nor its folder behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cancelkit._lifetime import FolderWatchdog

from .web.conftest import alive

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


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_folder_goes_when_its_owner_is_killed(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "stopped"
    with subprocess.Popen(
        [sys.executable, "-c", OWNS_A_FOLDER, str(marker)], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None
            folder = Path(owner.stdout.readline().strip())
            assert (folder / "data").exists()
        finally:
            owner.send_signal(getattr(signal, how))
            owner.wait(30)
    assert _gone_within(folder, 10), f"{folder} outlived its owner's {how}"
    assert marker.read_text() == "stopped\n"


def test_a_redis_server_and_its_folder_go_when_its_owner_is_killed() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNS_A_REDIS], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None
            pid, folder = owner.stdout.readline().split()
            assert alive(int(pid))
            assert Path(folder, "redis.sock").exists()
        finally:
            owner.kill()
            owner.wait(30)
    deadline = time.monotonic() + 10
    while alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pid)), "redis-server outlived its owner's SIGKILL"
    assert _gone_within(Path(folder), 10), f"{folder} outlived its owner's SIGKILL"

"""The demo service, started the way a user starts it: the ``cancelkit demo`` command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cancelkit._lifetime import tied_to_this_process

from ..helpers import alive, proc_stat

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Demo:
    url: str
    process: subprocess.Popen[bytes]
    data: Path

    def stats(self) -> dict[str, object]:
        with urllib.request.urlopen(self.url + "/api/stats", timeout=5) as reply:
            result: dict[str, object] = json.loads(reply.read())
            return result

    def once_the_model_is_still(self, quiet: float = 0.3, limit: float = 10.0) -> dict[str, object]:
        """The stats once the model process has generated nothing for ``quiet``
        seconds. A Stop is answered once the demo closed the model's stream; the model,
        another process, may see that a moment later. A model that goes on generating
        is never still: after ``limit`` seconds this fails."""
        deadline = time.monotonic() + limit
        before = self.stats()
        while True:
            time.sleep(quiet)
            now = self.stats()
            if now["tokens_generated"] == before["tokens_generated"]:
                return now
            assert time.monotonic() < deadline, "the model is still generating"
            before = now


def start_demo(
    data: Path, rate: float = 100.0, *, args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Demo:
    """``cancelkit demo`` on a free port, once it answers ``/api/stats``."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelkit",
            "demo",
            "--port",
            str(port),
            "--data",
            str(data),
            "--model-rate",
            str(rate),
            "--grace",
            "3",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=tied_to_this_process(signal.SIGTERM),  # never outlives the session
    )
    demo = Demo(f"http://127.0.0.1:{port}", process, data)
    deadline = time.monotonic() + 60  # two cold Python processes on a busy machine
    while True:
        try:
            demo.stats()
            return demo
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the demo did not start") from None
            time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def model_pid(demo: Demo) -> int:
    """The pid of the demo's local model process (``cancelkit model``)."""
    deadline = time.monotonic() + 10
    while True:
        for pid in children(demo.process.pid):
            try:
                if b"model" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    return pid
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise AssertionError("the demo has no local model process")
        time.sleep(0.05)


def gone_within(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ends within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_demo(demo: Demo) -> None:
    if demo.process.poll() is None:
        demo.process.send_signal(signal.SIGTERM)
        try:
            demo.process.wait(15)
        except subprocess.TimeoutExpired:
            demo.process.kill()
            demo.process.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo"))
    yield running
    stop_demo(running)

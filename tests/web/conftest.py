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
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


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


def start_demo(data: Path, rate: float = 100.0) -> Demo:
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    demo = Demo(f"http://127.0.0.1:{port}", process, data)
    deadline = time.monotonic() + 20
    while True:
        try:
            demo.stats()
            return demo
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the demo did not start") from None
            time.sleep(0.05)


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

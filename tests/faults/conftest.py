"""Faults injected into real parts: a model server process to kill, a SQLite store."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

from cancelkit._lifetime import tied_to_this_process
from cancelkit.stores import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


class ModelProcess:
    """``cancelkit model`` in a process of its own, for a test to kill."""

    def __init__(self, rate: float) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cancelkit", "model", "--port", str(port), "--rate", str(rate)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=tied_to_this_process(signal.SIGTERM),  # never outlives the session
        )
        for _ in range(1200):  # 60 s at least: a cold Python process on a busy machine
            try:
                urllib.request.urlopen(self.base_url + "/health", timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the model process did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def model_process() -> Iterator[ModelProcess]:
    started = ModelProcess(rate=100)
    try:
        yield started
    finally:
        started.stop()
    assert started.process.poll() is not None  # nothing outlives the test


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "faults.db")
    await store.setup()
    yield store
    await store.aclose()

"""The demo's local model process: it dies with the demo, and the demo survives its death.

However ``cancelkit demo`` ends (SIGTERM, SIGKILL), its ``cancelkit model`` process
ends too. When the model process dies mid-run, the run fails with a clear reason,
``/api/stats`` keeps answering and says so, and the model is restarted (a bounded
number of times; then the service says plainly that it is down).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

import httpx2

from .conftest import Demo, gone_within, model_pid, start_demo, stop_demo
from .test_demo_service import LONG, wait_for

if TYPE_CHECKING:
    from pathlib import Path


def test_sigterm_to_the_demo_stops_its_model_process(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    model = model_pid(demo)
    demo.process.send_signal(signal.SIGTERM)
    try:
        demo.process.wait(15)
    finally:
        stop_demo(demo)
    assert demo.process.returncode == -signal.SIGTERM  # it ended by the signal, after cleanup
    assert gone_within(model, 10)


def test_sigkill_to_the_demo_stops_its_model_process(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    model = model_pid(demo)
    demo.process.kill()  # no handler, no finally: the model must notice by itself
    demo.process.wait(15)
    assert gone_within(model, 10)


def _stats(demo: Demo) -> dict[str, Any]:
    with httpx2.Client(base_url=demo.url) as client:
        reply = client.get("/api/stats")
        assert reply.status_code == 200, reply.text  # never a 500 for a dead model
        result: dict[str, Any] = reply.json()
        return result


def _status(client: httpx2.Client, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
    return result


def test_a_model_process_that_dies_mid_run_fails_the_run_and_is_restarted(
    tmp_path: Path,
) -> None:
    demo = start_demo(tmp_path)
    try:
        first = model_pid(demo)
        assert _stats(demo)["model"] == {
            "status": "up",
            "restarts": 0,
            "last_exit": None,
            "reachable": True,
        }
        with httpx2.Client(base_url=demo.url) as client:
            run_id = client.post("/api/runs", json={"prompt": LONG}).json()["id"]
            assert wait_for(lambda: _status(client, run_id)["text"])  # it is streaming
            os.kill(first, signal.SIGKILL)
            assert wait_for(lambda: _status(client, run_id)["status"] == "failed", 30)
            reason = _status(client, run_id)["reason"]
            assert reason["kind"] == "error"
            assert "the model server is unreachable" in reason["message"]

            assert wait_for(lambda: _stats(demo)["model"]["status"] == "up", 30)
            model = _stats(demo)["model"]
            assert model["restarts"] == 1
            assert model["last_exit"] == -signal.SIGKILL
            assert model_pid(demo) != first
            again = client.post("/api/runs", json={"prompt": "Hi [[tokens:5]]"}).json()["id"]
            assert wait_for(lambda: _status(client, again)["status"] == "completed", 30)
    finally:
        stop_demo(demo)


def test_a_model_process_that_stays_dead_is_reported_down(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, args=["--model-restarts", "0"])
    try:
        os.kill(model_pid(demo), signal.SIGKILL)
        assert wait_for(lambda: _stats(demo)["model"]["status"] == "down", 30)
        stats = _stats(demo)
        assert stats["model"]["reachable"] is False
        assert stats["tokens_generated"] is None
        with httpx2.Client(base_url=demo.url) as client:
            refused = client.post("/api/runs", json={"prompt": "Hi"})
        assert refused.status_code == 503
        assert refused.json() == {"detail": "the model server is down; runs cannot start"}
    finally:
        stop_demo(demo)

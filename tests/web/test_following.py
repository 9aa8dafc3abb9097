"""Following a run is passive: one follower going away does not stop it for the others.

A disconnect cancels a run (kind ``disconnect``) only when the run was started by
that streaming request (``POST /api/runs/stream``), or when the last follower of a run
started with ``stop_when_unwatched`` goes away.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import httpx2

from .test_demo_service import LONG, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import Demo


@contextlib.contextmanager
def following(client: httpx2.Client, run_id: str) -> Iterator[Iterator[str]]:
    """Follow a run's events until the block ends (then the connection is closed)."""
    with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for line in lines:  # the server has registered this follower once it streams
            if line.startswith("event: "):
                break
        yield lines


def status(client: httpx2.Client, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
    return result


def test_a_follower_leaving_does_not_cancel_the_run(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        run_id = client.post("/api/runs", json={"prompt": LONG}).json()["id"]
        with following(client, run_id), following(client, run_id):
            assert status(client, run_id)["followers"] == 2
        assert wait_for(lambda: status(client, run_id)["followers"] == 0)  # both noticed gone
        assert status(client, run_id)["status"] == "running"
        with following(client, run_id):  # it can still be followed ...
            assert client.post(f"/api/runs/{run_id}/cancel").json() == {"cancelled": True}
        assert status(client, run_id)["reason"]["kind"] == "user"  # ... and stopped


def test_only_the_last_follower_leaving_stops_a_run_that_asked_for_it(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        body = {"prompt": LONG, "stop_when_unwatched": True}
        run_id = client.post("/api/runs", json=body).json()["id"]
        with following(client, run_id):
            with following(client, run_id):
                assert status(client, run_id)["followers"] == 2
            assert wait_for(lambda: status(client, run_id)["followers"] == 1)
            assert status(client, run_id)["status"] == "running"  # one is still watching
        assert wait_for(lambda: status(client, run_id)["status"] == "cancelled")
        assert status(client, run_id)["reason"] == {
            "kind": "disconnect",
            "message": "the client went away",
        }


def test_a_run_started_by_a_streaming_request_stops_when_it_goes_away(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        with client.stream("POST", "/api/runs/stream", json={"prompt": LONG}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines) == "event: run"
            run_id = json.loads(next(lines)[len("data: ") :])["id"]
            assert response.headers["x-run-id"] == run_id
            with following(client, run_id):  # another follower does not keep it going
                pass
        assert wait_for(lambda: status(client, run_id)["status"] == "cancelled")
        assert status(client, run_id)["reason"]["kind"] == "disconnect"


def test_a_streamed_run_streams_to_its_end(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        prompt = {"prompt": "Hi [[tokens:8]]"}
        with client.stream("POST", "/api/runs/stream", json=prompt) as response:
            kinds = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
            run_id = response.headers["x-run-id"]
        assert kinds[0] == "run"
        assert kinds[-1] == "done"
        assert "delta" in kinds
        assert status(client, run_id)["status"] == "completed"

"""WSGIRuns on a real multi-threaded WSGI server: a Stop request ends another request."""

from __future__ import annotations

import http.client
import json
import threading
import time
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from cancelkit import Runs, current_token
from cancelkit.web import WSGIRuns

from ..helpers import stop_landed

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

STEP = 0.01


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = False  # server_close() joins the request threads: none outlives it


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Agent:
    """A sync handler: a loop of 10 ms steps, checking its token between them."""

    def __init__(self) -> None:
        self.steps: dict[str, list[float]] = {}
        self.started = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        token = current_token()
        log = self.steps.setdefault(environ["cancelkit.run_id"], [])
        if environ["PATH_INFO"] == "/quick":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"quick"]
        self.started.set()
        for _ in range(3000):  # 30 s at most
            token.check()
            log.append(time.monotonic())
            time.sleep(STEP)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]


@pytest.fixture
def served() -> Iterator[tuple[str, int, Runs, Agent]]:
    runs = Runs()
    agent = Agent()
    app = WSGIRuns(agent, runs, owner=lambda environ: environ.get("HTTP_X_USER"))
    server = make_server(
        "127.0.0.1", 0, app, server_class=ThreadingServer, handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="wsgi-test-server")
    thread.start()
    try:
        yield "127.0.0.1", server.server_port, runs, agent
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def request(
    address: tuple[str, int], method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_stop_request_ends_the_run_of_another_request(
    served: tuple[str, int, Runs, Agent],
) -> None:
    host, port, runs, agent = served
    address = (host, port)
    answer: list[tuple[int, dict[str, str], bytes]] = []
    slow = threading.Thread(
        target=lambda: answer.append(
            request(address, "GET", "/agent", {"X-Run-Id": "run-1", "X-User": "alice"})
        )
    )
    slow.start()
    assert agent.started.wait(10)
    run = runs.get("run-1")
    assert run is not None
    assert run.status == "running"

    # Someone else's Stop and an unknown id: the same 404.
    other = request(address, "POST", "/runs/run-1/cancel", {"X-User": "mallory"})
    unknown = request(address, "POST", "/runs/nope/cancel", {"X-User": "alice"})
    assert other[0] == unknown[0] == 404
    assert other[2] == unknown[2]
    assert run.status == "running"

    status, _, body = request(address, "POST", "/runs/run-1/cancel", {"X-User": "alice"})
    answered = time.monotonic()
    assert status == 200
    assert json.loads(body)["cancelled"] is True
    slow.join(10)
    assert not slow.is_alive()

    # The Stop had reached the run's token when it was answered (not only when it
    # was sent: a loaded machine may take several steps to deliver it), and the run
    # stopped within one step of that answer.
    assert stop_landed(run) <= answered
    steps_after = sum(t > answered for t in agent.steps["run-1"])
    assert steps_after <= 1
    code, headers, stopped = answer[0]
    assert code == 409
    assert headers["X-Run-Id"] == "run-1"
    assert json.loads(stopped)["reason"]["kind"] == "user"
    assert (run.status, run.reason.kind if run.reason else None) == ("cancelled", "user")
    receipt = run.outcome.receipt  # type: ignore[union-attr]
    assert receipt.source is not None
    assert receipt.source.startswith("a Stop request in thread")
    assert receipt.stopped_in is not None
    print(f"stopped in {receipt.stopped_in * 1e3:.1f} ms, {steps_after} step(s) after the Stop")

    again = request(address, "POST", "/runs/run-1/cancel", {"X-User": "alice"})
    assert again[0] == 200
    assert json.loads(again[2]) == {"run_id": "run-1", "cancelled": False, "status": "cancelled"}
    assert len(runs) == 0


def test_ids_are_generated_returned_and_checked(served: tuple[str, int, Runs, Agent]) -> None:
    host, port, runs, _ = served
    address = (host, port)
    status, headers, body = request(address, "GET", "/quick")
    assert (status, body) == (200, b"quick")
    made = headers["X-Run-Id"]
    assert len(made) >= 20
    run = runs.get(made)
    assert run is not None
    assert run.status == "completed"

    for bad in ("", "a" * 129, "sp ace", "é"):
        code, _, _ = request(address, "GET", "/quick", {"X-Run-Id": bad})
        assert code == 400, bad
    assert request(address, "POST", "/runs/" + "x" * 5000 + "/cancel")[0] == 400
    assert request(address, "POST", "/runs//cancel")[0] == 400
    assert request(address, "POST", "/runs/a%2Fb/cancel")[0] == 400
    assert request(address, "GET", f"/runs/{made}/cancel")[0] == 405
    assert len(runs) == 0


def test_a_duplicate_active_id_is_refused(served: tuple[str, int, Runs, Agent]) -> None:
    host, port, runs, agent = served
    address = (host, port)
    slow = threading.Thread(target=request, args=(address, "GET", "/agent", {"X-Run-Id": "dup"}))
    slow.start()
    assert agent.started.wait(10)
    assert request(address, "GET", "/quick", {"X-Run-Id": "dup"})[0] == 409
    assert request(address, "POST", "/runs/dup/cancel")[0] == 200  # no owner: anyone
    slow.join(10)
    assert runs.get("dup").status == "cancelled"  # type: ignore[union-attr]


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="stop_path"):
        WSGIRuns(Agent(), Runs(), stop_path="/runs/cancel")
    with pytest.raises(ValueError, match="header"):
        WSGIRuns(Agent(), Runs(), header=" ")

"""The demo service over HTTP: runs, events, Stop, ownership, bad input, shutdown."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import httpx2

from cancelkit.demo._state import DemoState

from .conftest import Demo, start_demo

if TYPE_CHECKING:
    from pathlib import Path
from types import SimpleNamespace

LONG = "Write at length [[tokens:3000]] [[rate:60]]"


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def first_events(client: httpx2.Client, run_id: str, count: int) -> list[str]:
    lines = []
    with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                lines.append(line[7:])
                if len(lines) >= count:
                    break
    return lines


def test_a_run_completes_and_streams_its_events(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        prompt = 'Hi [[tool:save_note {"text": "remember"}]]'
        run_id = client.post("/api/runs", json={"prompt": prompt}).json()["id"]
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            kinds = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
        status = client.get(f"/api/runs/{run_id}").json()
    assert kinds[0] == "delta"
    assert {"tool_call", "tool_result", "usage"} <= set(kinds)
    assert kinds[-1] == "done"
    assert status["status"] == "completed"
    assert status["tool_calls"] == ["save_note"]
    receipt = status["receipt"]  # a run nobody stopped has one too, with no Stop in it
    assert receipt["run_id"] == run_id
    assert (receipt["status"], receipt["reason"], receipt["source"]) == ("completed", None, None)
    assert receipt["asked_at"] is None
    assert receipt["stopped_in_ms"] is None
    assert all(layer["after_stop_ms"] is None for layer in receipt["layers"])
    ends = [(layer["layer"], layer["outcome"]) for layer in receipt["layers"]]
    assert {("stream", "finished"), ("tool", "completed"), ("transaction", "committed")} <= set(
        ends
    )
    assert ends[-1] == ("run", "completed")
    assert receipt["tools"] == {"started": 1, "finished": 1, "prevented": 0}
    db = sqlite3.connect(demo.data / "demo.db")
    assert db.execute("SELECT text FROM demo_notes WHERE run_id = ?", (run_id,)).fetchall() == [
        ("remember",)
    ]


def test_stop_by_the_owner_reaches_the_model(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        run_id = client.post("/api/runs", json={"prompt": LONG}).json()["id"]
        done: dict[str, Any] = {}
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            lines = response.iter_lines()
            deltas = 0
            for line in lines:  # the page is watching the answer stream in
                deltas += line == "event: delta"
                if deltas == 5:
                    break
            assert client.post(f"/api/runs/{run_id}/cancel").json() == {"cancelled": True}
            for line in lines:  # ... and sees the run end, still connected
                if line.startswith("data: ") and '"status"' in line:
                    done = json.loads(line[6:])
        final = client.get(f"/api/runs/{run_id}").json()
    assert done["status"] == final["status"] == "cancelled"
    assert final["reason"] == {"kind": "user", "message": "Stop pressed"}
    assert final["usage"]["estimated"] is True
    assert demo.once_the_model_is_still()["tokens_after_disconnect"] == 0
    latency = demo.stats()["stop_latency_ms"]
    assert isinstance(latency, dict)
    assert latency["count"] >= 1
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]


def test_a_stop_goes_out_on_the_connection_the_page_left_open(demo: Demo) -> None:
    # The page polls /api/stats on a connection beside its event stream; its Stop
    # reuses that one. The service keeps it open past uvicorn's default 5 s, so a
    # Stop pressed after a pause needs no new connection (on a real network, one to
    # three round trips of handshakes before the Stop could even arrive).
    with httpx2.Client(base_url=demo.url) as client:
        run_id = client.post("/api/runs", json={"prompt": LONG}).json()["id"]
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line == "event: delta")
            port = int(demo.url.rsplit(":", 1)[1])
            page = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                page.request("GET", "/api/stats", headers={"Cookie": cookie})
                assert page.getresponse().read()
                opened = page.sock
                time.sleep(5.5)  # idle past uvicorn's default keep-alive
                page.request("POST", f"/api/runs/{run_id}/cancel", headers={"Cookie": cookie})
                answer = page.getresponse()
                assert page.sock is opened  # the same connection: it was still open
                assert json.loads(answer.read()) == {"cancelled": True}
            finally:
                page.close()
            ends = [line for line in lines if line.startswith("data: ") and '"status"' in line]
    assert json.loads(ends[-1][6:])["status"] == "cancelled"


def test_a_reply_cut_short_by_the_model_fails_the_run(demo: Demo) -> None:
    """The model server ends its reply's body early (``end-after``): nobody pressed
    Stop, so the run failed with the provider's error, and the page is told so."""
    with httpx2.Client(base_url=demo.url) as client:
        prompt = "Hi [[tokens:30]] [[fault:end-after=5]]"
        run_id = client.post("/api/runs", json={"prompt": prompt}).json()["id"]
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            kinds = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
        final = client.get(f"/api/runs/{run_id}").json()
    assert kinds.count("delta") >= 1
    assert kinds[-1] == "done"
    assert final["status"] == "failed"
    assert final["reason"]["kind"] == "error"
    assert final["reason"]["message"].startswith("ModelServerError: ")
    assert "the reply ended before its end" in final["reason"]["message"]
    assert len(final["text"]) == 20  # the five tokens that came
    assert final["usage"]["estimated"] is True
    receipt = final["receipt"]
    assert (receipt["status"], receipt["source"]) == ("failed", None)
    streams = [layer for layer in receipt["layers"] if layer["layer"] == "stream"]
    assert [layer["outcome"] for layer in streams] == ["failed"]
    assert streams[0]["detail"].startswith("ModelServerError: ")


def test_the_receipt_says_what_the_stop_stopped_and_when(demo: Demo) -> None:
    """A sync tool returns in its thread, then the answer streams; Stop closes it."""
    prompt = 'Work [[tool:crunch_numbers {"n": 1}]] [[tokens:3000]] [[rate:60]]'
    with httpx2.Client(base_url=demo.url) as client:
        run_id = client.post("/api/runs", json={"prompt": prompt}).json()["id"]
        assert client.get(f"/api/runs/{run_id}").json()["receipt"] is None  # still running
        done: dict[str, Any] = {}
        kind, deltas_after_tool = "", -1
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and kind == "done":
                    done = json.loads(line[6:])
                if not line.startswith("event: "):
                    continue
                kind = line[7:]
                if kind == "tool_result":  # the tool has returned, its thread too
                    deltas_after_tool = 0
                elif kind == "delta" and deltas_after_tool >= 0:
                    deltas_after_tool += 1
                    if deltas_after_tool == 5:  # the second turn's answer is streaming
                        stopped = client.post(f"/api/runs/{run_id}/cancel").json()
                        assert stopped == {"cancelled": True}
        final = client.get(f"/api/runs/{run_id}").json()
    receipt = final["receipt"]
    assert done["receipt"] == receipt  # the done event carries the same receipt
    assert receipt["status"] == "cancelled"
    assert receipt["reason"] == {"kind": "user", "message": "Stop pressed"}
    assert isinstance(receipt["source"], str)
    assert receipt["source"]
    assert receipt["asked_at"] is not None
    assert receipt["stopped_in_ms"] >= 0
    layers = receipt["layers"]
    streams = [layer for layer in layers if layer["layer"] == "stream"]
    assert [s["outcome"] for s in streams] == ["finished", "closed"]
    closed = streams[-1]
    assert closed["output_tokens"] > 0  # what arrived before the Stop, counted
    assert closed["estimated"] is True  # the provider's count never came
    assert closed["after_stop_ms"] >= 0
    threads = [layer for layer in layers if layer["layer"] == "thread"]
    assert [(t["name"], t["outcome"]) for t in threads] == [("crunch_numbers", "returned")]
    assert threads[0]["after_stop_ms"] < 0  # it had returned before the Stop
    tools = [(t["name"], t["outcome"]) for t in layers if t["layer"] == "tool"]
    assert tools == [("crunch_numbers", "completed")]
    assert ("transaction", "cancelled") in [(t["layer"], t["outcome"]) for t in layers]
    assert (layers[-1]["layer"], layers[-1]["outcome"]) == ("run", "cancelled")
    assert receipt["tools"] == {"started": 1, "finished": 1, "prevented": 0}
    assert receipt["usage"] == {
        "input_tokens": sum(s["input_tokens"] for s in streams),
        "output_tokens": sum(s["output_tokens"] for s in streams),
        "estimated": True,
    }


def test_someone_elses_run_is_a_404(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as alice, httpx2.Client(base_url=demo.url) as mallory:
        run_id = alice.post("/api/runs", json={"prompt": LONG}).json()["id"]
        assert mallory.post(f"/api/runs/{run_id}/cancel").status_code == 404
        assert mallory.get(f"/api/runs/{run_id}").status_code == 404
        assert mallory.get("/api/runs/no-such-run").status_code == 404
        assert alice.get(f"/api/runs/{run_id}").json()["status"] == "running"
        assert alice.post(f"/api/runs/{run_id}/cancel").json() == {"cancelled": True}


def test_a_stop_answered_before_fastapi_is_answered_as_the_route_answers(demo: Demo) -> None:
    # A Stop without a body takes the short path (StopRoute); one with a body goes
    # through FastAPI's route. What the client gets, and what happens, must not differ.
    with httpx2.Client(base_url=demo.url) as client:
        short, routed = (client.post("/api/runs", json={"prompt": LONG}).json()["id"] for _ in "ab")
        replies = {
            "short": [client.post(f"/api/runs/{short}/cancel") for _ in "ab"],
            "routed": [client.post(f"/api/runs/{routed}/cancel", json={}) for _ in "ab"],
        }
        for run_id in (short, routed):
            assert wait_for(
                lambda r=run_id: client.get(f"/api/runs/{r}").json()["status"] != "running"
            )
            described = client.get(f"/api/runs/{run_id}").json()
            assert (described["status"], described["reason"]["kind"]) == ("cancelled", "user")
    for first, again in replies.values():
        assert (first.status_code, first.content) == (200, b'{"cancelled":true}')
        assert (again.status_code, again.content) == (200, b'{"cancelled":false}')
    for name in ("content-type", "content-length", "x-cancelkit-worker"):
        assert replies["short"][0].headers[name] == replies["routed"][0].headers[name]
    assert "set-cookie" not in replies["short"][0].headers


def test_a_disconnected_event_stream_cancels_a_run_that_asked_for_it(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        body = {"prompt": LONG, "stop_when_unwatched": True}
        run_id = client.post("/api/runs", json=body).json()["id"]
        first_events(client, run_id, 3)  # leaving the stream closes the connection
        assert wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["status"] == "cancelled")
        reason = client.get(f"/api/runs/{run_id}").json()["reason"]
    assert reason["kind"] == "disconnect"


def test_bad_input_is_a_clear_4xx(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        empty = client.post("/api/runs", json={"prompt": ""})
        missing = client.post("/api/runs", json={})
        garbage = client.post(
            "/api/runs", content=b"{not json", headers={"content-type": "application/json"}
        )
        schema = client.get("/openapi.json").json()
    assert empty.status_code == 422
    assert "at least 1 character" in empty.text
    assert missing.status_code == 422
    assert garbage.status_code == 422
    assert "/api/runs" in schema["paths"]
    assert "/api/runs/{run_id}/cancel" in schema["paths"]


def test_sigterm_cancels_runs_with_kind_shutdown_and_exits_in_grace(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    try:
        with httpx2.Client(base_url=demo.url) as client:
            run_id = client.post(
                "/api/runs", json={"prompt": LONG + ' [[tool:save_note {"text": "x"}]]'}
            ).json()["id"]
            assert wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["text"])
            started = time.monotonic()
            demo.process.send_signal(signal.SIGTERM)
            demo.process.wait(10)
            took = time.monotonic() - started
    finally:
        if demo.process.poll() is None:
            demo.process.kill()
    # uvicorn re-raises the signal once its graceful shutdown is done, so that the
    # exit status says "terminated by SIGTERM": that is the clean path here.
    assert demo.process.returncode in (0, -signal.SIGTERM)
    # Within the grace (3 s) plus process exit on a busy machine, against the 50 s
    # the run would stream for.
    assert took < 3 + 10
    db = sqlite3.connect(tmp_path / "demo.db")
    row = db.execute(
        "SELECT status, reason_kind FROM cancelkit_runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    assert row == ("cancelled", "shutdown")
    assert db.execute("SELECT count(*) FROM demo_notes").fetchone() == (0,)  # rolled back


def test_the_service_forgets_old_finished_runs() -> None:
    state = DemoState(agent=None, secret=bytes(32))  # type: ignore[arg-type]
    ended = SimpleNamespace(done=lambda: True)
    finished = [SimpleNamespace(id=f"r{i}", run=ended) for i in range(5)]
    running = SimpleNamespace(id="live", run=SimpleNamespace(done=lambda: False))
    state.remember(running, keep=3)  # type: ignore[arg-type]
    for run in finished:
        state.remember(run, keep=3)  # type: ignore[arg-type]
    assert list(state.runs) == ["live", "r3", "r4"]  # a running run is never dropped

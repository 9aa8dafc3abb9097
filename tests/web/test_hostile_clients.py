"""The demo service against a hostile client: limits with clear 4xx answers.

Too many runs is a 429 with ``Retry-After``; a body over the limit is a 413 before it
is read (declared or streamed); a run nobody follows ends by itself (kind
``timeout``); bad input is a 422 that never echoes the input back, and never a 500.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
import pytest

from .conftest import Demo, start_demo, stop_demo
from .test_demo_service import LONG, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A demo with small limits: 2 runs per session, 3 in all, 4 KiB bodies."""
    running = start_demo(
        tmp_path_factory.mktemp("limited"),
        args=[
            "--max-runs-per-session",
            "2",
            "--max-runs",
            "3",
            "--max-body-bytes",
            str(BODY_LIMIT),
        ],
    )
    yield running
    stop_demo(running)


def _start(client: httpx2.Client, prompt: str = LONG) -> httpx2.Response:
    return client.post("/api/runs", json={"prompt": prompt})


def _stop_all(client: httpx2.Client, run_ids: list[str]) -> None:
    for run_id in run_ids:
        client.post(f"/api/runs/{run_id}/cancel")
    for run_id in run_ids:
        assert wait_for(
            lambda i=run_id: client.get(f"/api/runs/{i}").json()["status"] == "cancelled"
        )


def test_too_many_runs_in_one_session_is_a_429_with_retry_after(limited: Demo) -> None:
    with httpx2.Client(base_url=limited.url) as client:
        first, second = _start(client), _start(client)
        third = _start(client)
        ids = [first.json()["id"], second.json()["id"]]
        try:
            assert first.status_code == second.status_code == 201
            assert third.status_code == 429
            assert int(third.headers["retry-after"]) > 0
            assert "per session" in third.json()["detail"]
        finally:
            _stop_all(client, ids)
        again = _start(client)  # a stopped run no longer counts
        assert again.status_code == 201
        _stop_all(client, [again.json()["id"]])


def test_too_many_runs_on_the_service_is_a_429(limited: Demo) -> None:
    with (
        httpx2.Client(base_url=limited.url) as alice,
        httpx2.Client(base_url=limited.url) as bob,
        httpx2.Client(base_url=limited.url) as carol,
    ):
        started = [_start(alice), _start(alice), _start(bob)]
        refused = _start(carol)  # carol has none, but the service is full
        try:
            assert [r.status_code for r in started] == [201, 201, 201]
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) > 0
            assert "limit" in refused.json()["detail"]
        finally:
            _stop_all(alice, [r.json()["id"] for r in started[:2]])
            _stop_all(bob, [started[2].json()["id"]])


def _raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send ``head`` (and ``body``) on a socket; the status and JSON body of the answer.

    The body is never completed: an answer at all proves the server did not wait for
    (or buffer) the rest of it.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head + body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload)


def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read(limited: Demo) -> None:
    head = (
        b"POST /api/runs HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n"
    )
    status, answer = _raw_request(limited.url, head)  # not one byte of the 100 MB sent
    assert status == 413
    assert answer == {"detail": f"the request body is larger than {BODY_LIMIT} bytes"}


def test_a_streamed_body_over_the_limit_is_a_413_once_it_passes_it(limited: Demo) -> None:
    head = (
        b"POST /api/runs HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * (BODY_LIMIT + 1)
    status, answer = _raw_request(limited.url, head, b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert status == 413  # the chunked body never ended: the server stopped reading it
    assert "larger than" in answer["detail"]


def test_a_body_within_the_limit_is_served(limited: Demo) -> None:
    with httpx2.Client(base_url=limited.url) as client:
        padded = ("Hi [[tokens:3]]" + " " * 3980).encode()  # 3995 characters: allowed
        body = b'{"prompt": "' + padded + b'"}'
        reply = client.post("/api/runs", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 201
        run_id = reply.json()["id"]
        assert wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["status"] == "completed")


def test_a_run_nobody_follows_ends_by_itself_with_kind_timeout(tmp_path: Any) -> None:
    demo = start_demo(tmp_path, args=["--max-run-seconds", "1"])
    try:
        with httpx2.Client(base_url=demo.url) as client:
            run_id = _start(client).json()["id"]  # 3000 tokens at 60/s: far past a second
            assert wait_for(
                lambda: client.get(f"/api/runs/{run_id}").json()["status"] == "cancelled", 30
            )
            final = client.get(f"/api/runs/{run_id}").json()
    finally:
        stop_demo(demo)
    assert final["reason"]["kind"] == "timeout"


SECRET_MARK = "hunter2-do-not-echo"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps({"prompt": SECRET_MARK * 400}), id="too-long"),
        pytest.param(json.dumps({"prompt": 5, SECRET_MARK: SECRET_MARK}), id="wrong-type-and-key"),
        pytest.param('{"prompt": "' + SECRET_MARK, id="malformed-json"),
        pytest.param(json.dumps({"prompt": [SECRET_MARK]}), id="a-list"),
        pytest.param(json.dumps([SECRET_MARK]), id="not-an-object"),
        pytest.param(json.dumps({"prompt": "x", "stop_when_unwatched": SECRET_MARK}), id="flag"),
    ],
)
def test_a_422_never_echoes_the_input(demo: Demo, body: str) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        reply = client.post(
            "/api/runs", content=body.encode(), headers={"content-type": "application/json"}
        )
    assert reply.status_code == 422
    assert SECRET_MARK not in reply.text
    for error in reply.json()["detail"]:
        assert set(error) == {"loc", "msg", "type"}
        assert error["msg"]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param('{"prompt": "   "}', "blank", id="spaces"),
        pytest.param('{"prompt": "\\t\\n \\u3000"}', "blank", id="whitespace"),
        pytest.param('{"prompt": "\\ud800"}', "", id="lone-high-surrogate"),
        pytest.param('{"prompt": "a\\udfffb"}', "", id="lone-low-surrogate"),
        pytest.param('{"prompt": "x"', "JSON", id="malformed-json"),
        pytest.param("", "", id="empty-body"),
    ],
)
def test_bad_prompts_are_422s_not_500s(demo: Demo, raw: str, says: str) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        for path in ("/api/runs", "/api/runs/stream"):
            reply = client.post(
                path, content=raw.encode(), headers={"content-type": "application/json"}
            )
            assert reply.status_code == 422, reply.text
            assert says in " ".join(e["msg"] for e in reply.json()["detail"])
        assert client.get("/api/stats").json()["active_runs"] == 0  # nothing started


def test_a_client_gone_with_a_request_pipelined_behind_its_stream_stops_the_run(
    limited: Demo,
) -> None:
    # HTTP/1.1 lets a client send its next request before the first is answered. With
    # uvicorn's httptools parser the disconnect then goes to the queued request, never
    # to the streaming one: the servers run on h11 (UVICORN_HTTP), whatever is installed.
    parts = urlsplit(limited.url)
    assert parts.hostname is not None
    assert parts.port is not None
    body = json.dumps({"prompt": LONG}).encode()
    stream = (
        b"POST /api/runs/stream HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    behind = b"GET /api/stats HTTP/1.1\r\nHost: demo\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(stream + behind)
        reply = b""
        while reply.count(b"event: ") < 3:  # streaming: the run event, then deltas
            chunk = sock.recv(65536)
            assert chunk, "the stream ended before it began"
            reply += chunk
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields = {name.lower(): value for name, value in (line.split(": ", 1) for line in head[1:])}
    run_id = fields["x-run-id"]
    cookie = fields["set-cookie"].split(";", 1)[0]
    with httpx2.Client(base_url=limited.url, headers={"Cookie": cookie}) as client:
        assert wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["status"] != "running")
        described = client.get(f"/api/runs/{run_id}").json()
    assert (described["status"], described["reason"]["kind"]) == ("cancelled", "disconnect")

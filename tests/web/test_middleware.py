"""CancelOnDisconnect on a real uvicorn: a vanished client cancels the handler's work."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from cancelkit import CancelReason, current_token
from cancelkit.web import CancelOnDisconnect

from .conftest import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

seen: list[tuple[str, CancelReason | None]] = []


def make_app() -> CancelOnDisconnect:
    app = FastAPI()

    @app.get("/wait")
    async def wait(request: Request) -> dict[str, str]:
        token = request.state.cancel_token
        assert current_token() is token
        try:
            await anyio.sleep(30)  # not reading, not sending: only the middleware can tell
        finally:
            seen.append(("wait", token.reason))
        return {"never": "reached"}

    @app.get("/quiet-stream")
    async def quiet_stream(request: Request) -> StreamingResponse:
        token = request.state.cancel_token

        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            try:
                await anyio.sleep(30)  # silent between chunks, like a model thinking
                yield b"never\n"
            finally:
                seen.append(("stream", token.reason))

        return StreamingResponse(body())

    @app.get("/quick")
    async def quick(request: Request) -> dict[str, bool]:
        return {"cancelled": request.state.cancel_token.cancelled}

    return CancelOnDisconnect(app)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(running.serve()), daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


def wait_seen(name: str) -> CancelReason | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for kind, reason in seen:
            if kind == name:
                return reason
        time.sleep(0.01)
    raise AssertionError(f"{name} was never cancelled")


def test_a_plain_handler_is_cancelled_when_its_client_goes(server: str) -> None:
    with pytest.raises(httpx2.ReadTimeout), httpx2.Client(base_url=server, timeout=0.3) as client:
        client.get("/wait")
    assert wait_seen("wait") == CancelReason("disconnect", "the client went away")


def test_a_quiet_stream_is_cancelled_when_its_client_goes(server: str) -> None:
    with (
        httpx2.Client(base_url=server) as client,
        client.stream("GET", "/quiet-stream") as response,
    ):
        for line in response.iter_lines():
            assert line == "first"
            break
    assert wait_seen("stream") == CancelReason("disconnect", "the client went away")


def test_a_completed_request_is_not_cancelled(server: str) -> None:
    with httpx2.Client(base_url=server) as client:
        assert client.get("/quick").json() == {"cancelled": False}


@pytest.mark.anyio
async def test_the_request_is_there_for_the_app_without_a_turn_of_the_loop() -> None:
    """The body an app asks for first is already read: no checkpoint, so not even a
    cancelled scope around the app's ``receive()`` stops it."""
    got: list[dict[str, object]] = []
    sent: list[dict[str, object]] = []

    async def app(_scope: dict[str, object], receive: Any, send: Any) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            got.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    request = {"type": "http.request", "body": b'{"prompt": "hi"}', "more_body": False}
    messages = [request]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": []}
    with anyio.fail_after(5):
        await CancelOnDisconnect(app)(scope, receive, send)
    assert got == [request]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


@pytest.mark.anyio
async def test_a_disconnect_cancels_a_handler_that_waits_and_nothing_is_left() -> None:
    """The pump starts on the loop's next turn for a handler still running, sees the
    disconnect, cancels the request's token and the handler; it has ended when the
    middleware returns. A handler answered at once never starts one."""
    reasons: list[CancelReason | None] = []
    gone = anyio.Event()

    async def slow(_scope: dict[str, Any], receive: Any, send: Any) -> None:
        token = current_token()
        try:
            await anyio.sleep(30)
        finally:
            reasons.append(token.reason)

    async def quick(_scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def client(leaves: bool) -> Any:
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
        reads = [0]

        async def receive() -> dict[str, object]:
            reads[0] += 1
            if messages:
                return messages.pop()
            if leaves:
                await gone.wait()
                return {"type": "http.disconnect"}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        return receive, reads

    async def send(message: dict[str, object]) -> None:
        pass

    scope = {"type": "http", "method": "GET", "headers": []}
    receive, _ = client(leaves=True)
    async with anyio.create_task_group() as group:
        group.start_soon(CancelOnDisconnect(slow), dict(scope), receive, send)
        for _ in range(5):  # the handler waits; the pump has started and reads
            await anyio.lowlevel.checkpoint()
        gone.set()
    assert reasons == [CancelReason("disconnect", "the client went away")]

    receive, reads = client(leaves=False)
    with anyio.fail_after(5):
        await CancelOnDisconnect(quick)(dict(scope), receive, send)
    for _ in range(3):  # the loop turns on: no pump reads after the answer
        await anyio.lowlevel.checkpoint()
    assert reads == [1]

"""LimitBody: a body over the limit is a 413 before it is buffered; one within it
reaches the app as it came."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cancelkit.web import LimitBody

pytestmark = pytest.mark.anyio

LIMIT = 10


class Echo:
    """An ASGI app that reads the whole body and answers with its length."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.called = True
        size = 0
        if scope["method"] == "POST":
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


async def call(
    chunks: list[bytes], *, declared: int | None = None, method: str = "POST"
) -> tuple[int, bytes, Echo, int]:
    """Send ``chunks`` through ``LimitBody(Echo())``: status, body, the app, chunks read."""
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": method, "headers": headers}
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = Echo()
    await LimitBody(app, LIMIT)(scope, receive, send)
    return sent[0]["status"], sent[1]["body"], app, read


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    status, body, app, _ = await call([b"12345", b"67890"], declared=10)
    assert (status, body, app.called) == (200, b"10", True)


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    status, body, app, read = await call([b"x" * 11], declared=11)
    assert status == 413
    assert json.loads(body) == {"detail": f"the request body is larger than {LIMIT} bytes"}
    assert (app.called, read) == (False, 0)


async def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    status, _, app, read = await call([b"x" * 6, b"x" * 6, b"x" * 6, b"x" * 6])
    assert status == 413
    assert (app.called, read) == (False, 2)  # stopped reading at the chunk that passed it


async def test_a_get_is_passed_through() -> None:
    status, body, _, read = await call([], method="GET")
    assert (status, body, read) == (200, b"0", 0)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_a_limit_that_is_not_a_positive_int_is_refused(limit: Any) -> None:
    with pytest.raises(ValueError, match="positive int"):
        LimitBody(Echo(), limit)

"""StopRoute: a Stop it can answer is answered before the app, exactly as the app
would have answered it; anything else reaches the app untouched."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from fastapi import FastAPI, HTTPException, Request

from cancelkit.web import StopRoute

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

pytestmark = pytest.mark.anyio

PATH = "/api/runs/{run_id}/cancel"


class Service:
    """A FastAPI app with the same Stop route behind the middleware: which of the two
    answered is counted, so a test can tell the fast path from the route."""

    def __init__(self) -> None:
        self.running = {"r1": "alice", "r2": "alice"}
        self.fast: list[str] = []
        self.routed: list[str] = []
        app = FastAPI()

        @app.post(PATH)
        async def cancel(run_id: str, request: Request) -> dict[str, bool]:
            self.routed.append(run_id)
            stopped = self.stop(run_id, request.headers.get("x-user"))
            if stopped is None:
                raise HTTPException(404, "no such run")
            return {"cancelled": stopped}

        @app.get("/api/runs/{run_id}/cancel")
        async def described(run_id: str) -> dict[str, str]:
            return {"run": run_id}

        self.app = StopRoute(app, PATH, self.fast_stop)

    def stop(self, run_id: str, user: str | None) -> bool | None:
        if user is None or self.running.get(run_id) != user:
            return None  # someone else's looks like an unknown id
        return self.running.pop(run_id) == user

    def fast_stop(self, run_id: str, scope: MutableMapping[str, Any]) -> bool | None:
        user = dict(scope["headers"]).get(b"x-user")
        if user is None or run_id not in self.running:
            return None  # not sure: the route decides (404, or the run elsewhere)
        self.fast.append(run_id)
        return self.stop(run_id, user.decode())

    def client(self) -> httpx2.AsyncClient:
        transport = httpx2.ASGITransport(app=self.app)
        return httpx2.AsyncClient(transport=transport, base_url="http://service")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stop_it_can_answer_is_answered_before_the_app(anyio_backend: str) -> None:
    service = Service()
    async with service.client() as client:
        reply = await client.post("/api/runs/r1/cancel", headers={"x-user": "alice"})
    assert reply.status_code == 200
    assert reply.json() == {"cancelled": True}
    assert reply.headers["content-type"] == "application/json"
    assert service.fast == ["r1"]
    assert service.routed == []
    assert "r1" not in service.running


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_fast_answer_is_byte_for_byte_the_apps(anyio_backend: str) -> None:
    service = Service()
    async with service.client() as client:
        fast = await client.post("/api/runs/r1/cancel", headers={"x-user": "alice"})
        # a body (even an empty JSON one) sends it through the app's route
        routed = await client.post("/api/runs/r2/cancel", headers={"x-user": "alice"}, json={})
    assert (service.fast, service.routed) == (["r1"], ["r2"])
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content == b'{"cancelled":true}'
    assert fast.headers.raw == routed.headers.raw  # the same headers, in the same order


async def chunks() -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length)."""
    yield b"{"
    yield b"}"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_what_it_is_not_sure_of_reaches_the_app_untouched(anyio_backend: str) -> None:
    service = Service()
    alice = {"x-user": "alice"}
    async with service.client() as client:
        unknown = await client.post("/api/runs/nope/cancel", headers=alice)
        no_user = await client.post("/api/runs/r1/cancel")
        mallory = await client.post("/api/runs/r1/cancel", headers={"x-user": "mallory"})
        described = await client.get("/api/runs/r1/cancel", headers=alice)
        chunked = await client.post("/api/runs/r1/cancel", headers=alice, content=chunks())
    assert unknown.status_code == no_user.status_code == 404
    assert described.json() == {"run": "r1"}
    assert chunked.json() == {"cancelled": True}  # answered by the route, body and all
    # mallory's was taken by the fast path (the run was there) and refused: None
    assert mallory.status_code == 404
    assert service.routed == ["nope", "r1", "r1", "r1"]
    assert service.fast == ["r1"]  # mallory's try: looked at, then left to the route


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/runs//cancel",  # an empty id
        "/api/runs/a/b/cancel",  # two segments
        "/api/runs/r1/cancel/",  # a trailing slash
        "/api/runs/r1/cancelled",
        "/api/run/r1/cancel",
        "/api/runs/r1",
        "/" + "x" * 10_000,
    ],
)
async def test_paths_that_do_not_match_reach_the_app(anyio_backend: str, path: str) -> None:
    service = Service()
    async with service.client() as client:
        reply = await client.post(path, headers={"x-user": "alice"})
    assert service.fast == []
    assert reply.status_code in (404, 405, 307)  # the app's own answer
    assert service.running == {"r1": "alice", "r2": "alice"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_hostile_id_is_handed_over_as_text_and_never_reflected(
    anyio_backend: str,
) -> None:
    service = Service()
    script = "<img src=x onerror=alert(1)>"
    async with service.client() as client:
        reply = await client.post(f"/api/runs/{script}/cancel", headers={"x-user": "alice"})
    assert reply.status_code == 404
    assert script.encode() not in reply.content
    assert json.loads(reply.content) == {"detail": "no such run"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failing_stop_fails_the_request_as_a_failing_handler_does(
    anyio_backend: str,
) -> None:
    def broken(run_id: str, scope: MutableMapping[str, Any]) -> bool | None:
        raise RuntimeError("the lookup broke")

    app = StopRoute(FastAPI(), PATH, broken)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://service") as client:
        with pytest.raises(RuntimeError, match="the lookup broke"):
            await client.post("/api/runs/r1/cancel")


@pytest.mark.parametrize(
    "path",
    ["api/runs/{run_id}/cancel", "/api/runs/cancel", "/{run_id}/{run_id}", "/runs/x{run_id}"],
)
def test_a_path_without_one_whole_run_id_segment_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        StopRoute(FastAPI(), path, lambda run_id, scope: None)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_id_may_be_the_last_segment(anyio_backend: str) -> None:
    seen: list[str] = []

    def stop(run_id: str, scope: MutableMapping[str, Any]) -> bool | None:
        seen.append(run_id)
        return False

    transport = httpx2.ASGITransport(app=StopRoute(FastAPI(), "/stop/{run_id}", stop))
    async with httpx2.AsyncClient(transport=transport, base_url="http://service") as client:
        reply = await client.post("/stop/r%2D1")
    assert reply.json() == {"cancelled": False}
    assert seen == ["r-1"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_path_is_matched_as_the_app_routes_it_under_a_root_path(
    anyio_backend: str,
) -> None:
    # Mounted under /prefix (a proxy's root_path), the app routes the path without it.
    service = Service()
    transport = httpx2.ASGITransport(app=service.app, root_path="/prefix")
    alice = {"x-user": "alice"}
    async with httpx2.AsyncClient(transport=transport, base_url="http://service") as client:
        fast = await client.post("/prefix/api/runs/r1/cancel", headers=alice)
        routed = await client.post("/prefix/api/runs/r2/cancel", headers=alice, json={})
    assert fast.json() == routed.json() == {"cancelled": True}
    assert (service.fast, service.routed) == (["r1"], ["r2"])
    assert service.running == {}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("length", [b" 0", b"0 ", b"00x", b"-0", b"1"])
async def test_a_content_length_it_does_not_read_as_zero_reaches_the_app(
    anyio_backend: str, length: bytes
) -> None:
    service = Service()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/runs/r1/cancel",
        "root_path": "",
        "headers": [(b"x-user", b"alice"), (b"content-length", length)],
        "query_string": b"",
    }
    await service.app(scope, receive, send)
    assert service.fast == []  # LimitBody reads such a length the same way: not 0

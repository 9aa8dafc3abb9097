"""``CancelOnDisconnect``: a client that goes away cancels its request's work.

ASGI servers report a vanished client as an ``http.disconnect`` message, but only to
whoever calls ``receive()``, and a handler busy elsewhere (awaiting a model, streaming
events) is not calling it. This middleware is the one reader of ``receive()``: a pump
task forwards every message to the app and, on ``http.disconnect``, cancels the
request's token with kind ``disconnect`` and the handler's cancel scope. No polling.
Inside the handler, ``current_token()`` (and ``request.state.cancel_token``) is the
request's token.
"""

from __future__ import annotations

import math
from typing import Any

import anyio

from .._exceptions import CancelReason
from .._token import CancelToken, _current

__all__ = ("CancelOnDisconnect",)

_GONE = CancelReason("disconnect", "the client went away")


class CancelOnDisconnect:
    """ASGI middleware: ``app = CancelOnDisconnect(app)``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = CancelToken()
        scope.setdefault("state", {})["cancel_token"] = token
        inbox, outbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        finished = False
        # The request's first message (its body, usually all of it) is read here, so
        # that the app finds it waiting: through the pump it would wait two turns of
        # the loop (the pump's start, then its own wake-up), tens of ms under load.
        first = await receive()
        inbox.send_nowait(first)

        async def pump(handler: anyio.CancelScope) -> None:
            with inbox:
                message = first
                while message["type"] != "http.disconnect":
                    message = await receive()
                    inbox.send_nowait(message)
                if not finished:
                    token.cancel(_GONE)
                    handler.cancel()

        async def app_receive() -> dict[str, Any]:
            try:
                return outbox.receive_nowait()  # no turn of the loop for what is here
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                return {"type": "http.disconnect"}
            try:
                return await outbox.receive()
            except anyio.EndOfStream:
                return {"type": "http.disconnect"}

        reset = _current.set(token)
        try:
            with outbox:
                async with anyio.create_task_group() as group:
                    with anyio.CancelScope() as handler:
                        group.start_soon(pump, handler)
                        await self.app(scope, app_receive, send)
                    finished = True
                    group.cancel_scope.cancel()
        finally:
            _current.reset(reset)

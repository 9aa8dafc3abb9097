"""``LimitBody``: a request body over a set size is a 413, before it is buffered.

A server reads what a client sends until the app stops asking; an app that parses
JSON asks for all of it. In front of such an app, this middleware counts the body as
it arrives and answers ``413`` once it passes the limit (or at once, when the
declared ``Content-Length`` already does), so one client cannot make the service
hold an arbitrarily large body in memory. It needs nothing but ASGI.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ("LimitBody",)

# Methods whose bodies the apps behind this do not read: passed through untouched.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length``: ``None`` if it has none, ``-1`` if it is not
    a number (refused). The last one counts, if there are several."""
    declared = dict(headers).get(b"content-length")
    if declared is None:
        return None
    return int(declared) if declared.isdigit() else -1


class LimitBody:
    """ASGI middleware: ``app = LimitBody(app, limit)``, at most ``limit`` body bytes.

    A declared ``Content-Length`` over the limit (or not a number) is refused before a
    byte is read; a streamed (chunked) body is counted as it arrives and refused once
    it passes the limit. A body within the limit reaches the app as it came, message
    by message. The refusal is ``413`` with a JSON ``detail`` naming the limit.

    Args:
        app: the ASGI app behind it.
        limit: the largest body accepted, in bytes.

    Raises:
        ValueError: ``limit`` is not a positive int.
    """

    def __init__(self, app: Any, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int (bytes), not {limit!r}")
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is not None and (declared < 0 or declared > self.limit):
            await self._refuse(send)
            return
        if scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        received: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before it finished sending: nothing to do
            received.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"detail": f"the request body is larger than {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

"""``StopRoute``: a Stop request is answered before the web framework sees it.

A Stop matters most when the service is busiest, and under load every request waits
in the event loop behind the others. The time it waits is, per request ahead of it,
what that request costs: a FastAPI request with its middleware costs a few hundred
microseconds, so the sixtieth Stop of a burst reaches its handler tens of milliseconds
late, while the model it should stop keeps generating. This middleware answers a Stop
at the outermost layer, in a fraction of that: it matches the path itself, asks the
application's ``stop`` callable, and writes the reply, with no routing, dependency
injection, request object or per-request task.

Anything it is not sure of (another method or path, a request with a body, a
``stop`` that answers ``None``) goes to the app unchanged, which answers it as it
always did; so the fast path never changes what a request gets, only how soon.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._limit import declared_length

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

__all__ = ("StopRoute",)

_PLACEHOLDER = "{run_id}"


def _reply(cancelled: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two messages of the answer, made once: as Starlette's JSONResponse sends it."""
    body = json.dumps({"cancelled": cancelled}, separators=(",", ":")).encode()
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


_REPLIES = {True: _reply(True), False: _reply(False)}


class StopRoute:
    """ASGI middleware: ``app = StopRoute(app, "/api/runs/{run_id}/cancel", stop)``.

    A ``POST`` without a body to a path that matches ``path`` (``{run_id}`` standing
    for one non-empty path segment) calls ``stop(run_id, scope)``:

    - ``True`` or ``False`` (whether this call stopped the run) is answered at once,
      ``200`` with ``{"cancelled": true|false}``;
    - ``None`` (not a run it can answer for here: unknown, someone else's, held by
      another process, no session) passes the request to ``app`` untouched.

    ``stop`` runs on the event loop and must not block: look the run up, call
    :meth:`~cancelkit.Run.cancel`, return. An exception from it is not caught: it
    reaches the server, which answers 500 (without what the app's own error handling
    or the middleware inside this one would add).

    The path is matched as the app routes it: without the ``root_path`` the app is
    mounted under.

    Args:
        app: the ASGI app behind it, which answers everything else.
        path: the Stop route, with exactly one ``{run_id}`` segment.
        stop: ``stop(run_id, scope) -> bool | None``.

    Raises:
        ValueError: ``path`` does not start with ``/`` or has no single ``{run_id}``
            segment.
    """

    def __init__(
        self, app: Any, path: str, stop: Callable[[str, MutableMapping[str, Any]], bool | None]
    ) -> None:
        segments = path.split("/")
        if not path.startswith("/") or segments.count(_PLACEHOLDER) != 1:
            raise ValueError(f"path must start with / and hold one {_PLACEHOLDER} segment")
        if path.count(_PLACEHOLDER) != 1:
            raise ValueError(f"{_PLACEHOLDER} must be a whole segment of path, not {path!r}")
        at = segments.index(_PLACEHOLDER)
        self.app = app
        self.stop = stop
        self._prefix = "/".join(segments[:at]) + "/"
        self._suffix = "/" + "/".join(segments[at + 1 :]) if at + 1 < len(segments) else ""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            run_id = self._run_id(_route_path(scope))
            if run_id is not None and _bodiless(scope["headers"]):
                stopped = self.stop(run_id, scope)
                if stopped is not None:
                    start, body = _REPLIES[bool(stopped)]
                    # Copies: a middleware outside may change what it is sent.
                    await send(start | {"headers": list(start["headers"])})
                    await send(dict(body))
                    return
        await self.app(scope, receive, send)

    def _run_id(self, path: str) -> str | None:
        prefix, suffix = self._prefix, self._suffix
        if not path.startswith(prefix) or not path.endswith(suffix):
            return None
        run_id = path[len(prefix) : len(path) - len(suffix)]
        if not run_id or "/" in run_id:
            return None
        return run_id


def _route_path(scope: MutableMapping[str, Any]) -> str:
    """The path the app routes on: without the ``root_path`` it is mounted under, as
    Starlette takes it off (``starlette._utils.get_route_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _bodiless(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request says it has no body (a ``Content-Length`` of 0, read as
    :class:`LimitBody` reads it, or none, and not chunked): only then can it be
    answered without reading one."""
    if declared_length(headers) not in (None, 0):
        return False
    return all(name != b"transfer-encoding" for name, _ in headers)

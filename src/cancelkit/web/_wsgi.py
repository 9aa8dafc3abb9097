"""``WSGIRuns``: every request of a sync app is a run, and a Stop request ends it.

WSGI servers (gunicorn's sync and thread workers, waitress, mod_wsgi, wsgiref) run
each request in a thread, and Django, Flask or a plain WSGI app does its work there.
This middleware makes each request a sync run (:meth:`Runs.start_sync`) in the
request's thread: the handler's ``current_token()`` is the run's token, guarded sync
streams are shut down the moment it fires, and a Stop request
(``POST /runs/{id}/cancel``), served by any other thread, cancels it by id. WSGI has
no disconnect signal, so only a Stop, the run's deadline or a shutdown stops it.

The request's run id is the client's (the ``X-Run-Id`` request header, checked) or
an unguessable one; either way the response's ``X-Run-Id`` header names it. A run
stopped before its response began is answered with a status that says so (409 for a
Stop, 504 for its deadline, 503 for a shutdown) and the reason as JSON; a response
already streaming is cut short. Someone else's run and an unknown id are the same
404.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import Cancelled, CancelReason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .._runs import Runs
    from .._sync_run import SyncRun

__all__ = ("WSGIRuns",)

StartResponse = Any  # the server's start_response(status, headers, exc_info=None)
WSGIApp = Any  # app(environ, start_response) -> iterable of bytes

_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_STOP: Final = CancelReason("user", "stopped by a Stop request")
_STOPPED_STATUS: Final = {
    "timeout": "504 Gateway Timeout",
    "shutdown": "503 Service Unavailable",
}


class WSGIRuns:
    """WSGI middleware: ``app = WSGIRuns(app, runs)``; each request runs as a run.

    Args:
        app: the WSGI app (a Django ``WSGIHandler``, a Flask app...).
        runs: the registry the requests' runs live in (one per process).
        header: the request header carrying a client-chosen run id, and the
            response header naming the run (ids: 1 to 128 of ``A-Z a-z 0-9 . _ ~ -``).
        stop_path: the Stop endpoint, with ``{id}`` where the id goes; ``POST`` only.
        owner: ``owner(environ)``: who a request acts for (a session, a user id).
            A request's run belongs to its owner, and only the same owner's Stop
            reaches it; by default anyone holding the id may stop it.
        timeout: seconds after which a request's run is cancelled (kind ``timeout``).

    Raises:
        ValueError: ``stop_path`` does not hold one ``{id}``, or ``header`` is blank.
    """

    def __init__(
        self,
        app: WSGIApp,
        runs: Runs,
        *,
        header: str = "X-Run-Id",
        stop_path: str = "/runs/{id}/cancel",
        owner: Callable[[dict[str, Any]], object] | None = None,
        timeout: float | None = None,
    ) -> None:
        if stop_path.count("{id}") != 1 or not stop_path.startswith("/"):
            raise ValueError(f"stop_path must start with / and hold one {{id}}, not {stop_path!r}")
        if not header.strip():
            raise ValueError("header must not be blank")
        self.app = app
        self.runs = runs
        self.header = header
        self._environ_key = "HTTP_" + header.upper().replace("-", "_")
        self._prefix, self._suffix = stop_path.split("{id}")
        self._owner = owner
        self._timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if (
            path.startswith(self._prefix)
            and path.endswith(self._suffix)
            and len(path) >= len(self._prefix) + len(self._suffix)
        ):
            run_id = path[len(self._prefix) : len(path) - len(self._suffix)]
            return self._stop(environ, start_response, run_id)
        return self._run(environ, start_response)

    def _stop(
        self, environ: dict[str, Any], start_response: StartResponse, run_id: str
    ) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(
                start_response, "405 Method Not Allowed", {"error": "use POST"}, [("Allow", "POST")]
            )
        if not _ID.fullmatch(run_id):
            return _reply(start_response, "400 Bad Request", {"error": "malformed run id"})
        run = self.runs.get(run_id)
        if run is None or (self._owner is not None and run.owner != self._owner(environ)):
            return _reply(start_response, "404 Not Found", {"error": "no such run"})
        cancelled = run.cancel(_STOP, source="a Stop request")
        body = {"run_id": run_id, "cancelled": cancelled, "status": run.status}
        return _reply(start_response, "200 OK", body)

    def _run(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        asked = environ.get(self._environ_key)
        if asked is not None and not _ID.fullmatch(asked):
            return _reply(start_response, "400 Bad Request", {"error": f"malformed {self.header}"})
        owner = self._owner(environ) if self._owner is not None else None
        try:
            sync_run = self.runs.start_sync(run_id=asked, owner=owner, timeout=self._timeout)
        except ValueError:
            return _reply(start_response, "409 Conflict", {"error": "this run id is in use"})
        except RuntimeError:
            return _reply(start_response, "503 Service Unavailable", {"error": "shutting down"})
        environ["cancelkit.run_id"] = sync_run.id
        named = (self.header, sync_run.id)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, named], exc_info)

        try:
            body = sync_run.call(self.app, environ, start)
        except BaseException as exc:
            outcome = sync_run.finish(error=exc)
            if outcome.status != "cancelled":
                raise
            return _stopped(start_response, sync_run, named)
        return _RunBody(body, sync_run)


class _RunBody:
    """The app's response body, produced inside the run; the run ends with it."""

    def __init__(self, body: Iterable[bytes], sync_run: SyncRun[Any]) -> None:
        self._body = body
        self._run = sync_run

    def __iter__(self) -> Iterator[bytes]:
        sync_run = self._run
        iterator: Iterator[bytes] | None = None
        while True:
            try:
                if iterator is None:
                    iterator = sync_run.call(iter, self._body)
                chunk = sync_run.call(next, iterator, None)
            except Cancelled:
                sync_run.finish()  # a Stop won: cancelled; the response is cut short
                return
            except BaseException as exc:
                sync_run.finish(error=exc)
                raise
            if chunk is None:
                break
            yield chunk
        sync_run.finish()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if callable(close):
                close()
        finally:
            self._run.finish()


def _stopped(
    start_response: StartResponse, sync_run: SyncRun[Any], named: tuple[str, str]
) -> list[bytes]:
    reason = sync_run.run.reason
    kind = reason.kind if reason is not None else "user"
    body = {
        "run_id": sync_run.id,
        "status": "cancelled",
        "reason": {"kind": kind, "message": reason.message if reason is not None else ""},
    }
    status = _STOPPED_STATUS.get(kind, "409 Conflict")
    return _reply(start_response, status, body, [named], sys.exc_info())


def _reply(
    start_response: StartResponse,
    status: str,
    body: dict[str, Any],
    headers: list[tuple[str, str]] | None = None,
    exc_info: Any = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *(headers or []),
        ],
        exc_info if exc_info and exc_info[0] is not None else None,
    )
    return [data]

"""``cancelkit.web``: ASGI and WSGI integration, nothing that depends on an application.

:class:`CancelOnDisconnect` cancels a request's work when its client goes away
(kind ``disconnect``), from the server's own ``http.disconnect``, without polling.
:class:`LimitBody` refuses a request body over a set size (413) before it is
buffered. :class:`StopRoute` answers a Stop request before the framework sees it, so
a Stop stays fast when the service is busiest. All three are plain ASGI: they wrap
any ASGI app (FastAPI, Starlette, ...).
:class:`WSGIRuns` is for sync apps (Django, Flask, any WSGI app): each request runs
as a sync run, stopped by id from a Stop request served by any other thread. The
demo service built on them lives in ``cancelkit.demo`` (``cancelkit demo``).
"""

from .._module import publish as _publish
from ._limit import LimitBody as LimitBody
from ._middleware import CancelOnDisconnect as CancelOnDisconnect
from ._stop_route import StopRoute as StopRoute
from ._wsgi import WSGIRuns as WSGIRuns

__all__ = ("CancelOnDisconnect", "LimitBody", "StopRoute", "WSGIRuns")

_publish(__name__, globals())

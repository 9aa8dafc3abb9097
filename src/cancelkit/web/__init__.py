"""``cancelkit.web``: ASGI integration, and nothing that depends on an application.

:class:`CancelOnDisconnect` cancels a request's work when its client goes away
(kind ``disconnect``), from the server's own ``http.disconnect``, without polling.
:class:`LimitBody` refuses a request body over a set size (413) before it is
buffered. Both are plain ASGI: they wrap any ASGI app (FastAPI, Starlette, ...). The
demo service built on them lives in ``cancelkit.demo`` (``cancelkit demo``).
"""

from .._module import publish as _publish
from ._limit import LimitBody as LimitBody
from ._middleware import CancelOnDisconnect as CancelOnDisconnect

__all__ = ("CancelOnDisconnect", "LimitBody")

_publish(__name__, globals())

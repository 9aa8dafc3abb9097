"""``cancelkit.web``: ASGI and FastAPI integration, and the demo service.

:class:`CancelOnDisconnect` cancels a request's work when its client goes away
(kind ``disconnect``), from the server's own ``http.disconnect``, without polling.
The demo app needs ``pip install "cancelkit[web]"`` (FastAPI, uvicorn, itsdangerous).
"""

from ._middleware import CancelOnDisconnect as CancelOnDisconnect

__all__ = ("CancelOnDisconnect",)

CancelOnDisconnect.__module__ = __name__

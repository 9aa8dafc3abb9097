"""The embedded local model server: the official SDKs' protocols, no API key needed.

Speaks the Anthropic Messages API (``POST /v1/messages``) and OpenAI Chat
Completions (``POST /v1/chat/completions``), streaming and not, with deterministic
text at a set rate, scripted tool calls and injectable faults (see
:mod:`cancelkit.llm.local._script` for the prompt directives). It stops generating
within one chunk of the client going away, and counts: ``GET /stats``.

Inside: what it says (``_script``), how each protocol frames it (``_wire`` and
``_wire_anthropic``, ``_wire_openai``), the ASGI app that generates and notices
(``_app``), what it counts (``_records``), and how it runs (``_server``).

Needs ``uvicorn`` (``pip install "cancelkit[web]"``).
"""

from ..._module import publish as _publish
from ._app import LocalModelApp as LocalModelApp
from ._app import LocalModelConfig as LocalModelConfig
from ._records import RequestRecord as RequestRecord
from ._script import count_tokens as count_tokens
from ._server import LocalModelServer as LocalModelServer
from ._server import serve as serve

__all__ = (
    "LocalModelApp",
    "LocalModelConfig",
    "LocalModelServer",
    "RequestRecord",
    "count_tokens",
    "serve",
)

_publish(__name__, globals())

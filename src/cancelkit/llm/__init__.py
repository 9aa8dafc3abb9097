"""The LLM layer: one model protocol, adapters on the official SDKs, a local server.

``AnthropicModel`` and ``OpenAIModel`` wrap ``anthropic.AsyncAnthropic`` and
``openai.AsyncOpenAI``; both yield the same events (:class:`TextDelta`,
:class:`ToolCall`, :class:`Usage`, :class:`Done`) from ``model.stream(...)``, and
leaving the ``async with`` block for any reason closes the HTTP response, so the
provider stops generating. Both raise the same errors (:class:`ModelError` and its
kinds), whichever SDK failed. :mod:`cancelkit.llm.local` is a server speaking both
protocols, for tests and demos without an API key.

Inside: the vocabulary (``_types``, ``_tokens``), the protocol (``_model``), one call
(``_stream``), the reading of a provider's events and what is wrong when they cannot be
read (``_translator``, ``_sse``), the errors (``_errors``), the flow every adapter
shares (``_adapter``), and one module per provider (``_anthropic``, ``_openai``).
"""

from .._exceptions import ModelError as ModelError
from .._exceptions import ModelRateLimited as ModelRateLimited
from .._exceptions import ModelRejected as ModelRejected
from .._exceptions import ModelServerError as ModelServerError
from .._exceptions import ModelUnavailable as ModelUnavailable
from .._module import publish as _publish
from ._anthropic import AnthropicModel as AnthropicModel
from ._model import Model as Model
from ._openai import OpenAIModel as OpenAIModel
from ._stream import ModelStream as ModelStream
from ._tokens import estimate_tokens as estimate_tokens
from ._types import Done as Done
from ._types import Message as Message
from ._types import ModelEvent as ModelEvent
from ._types import StopReason as StopReason
from ._types import TextDelta as TextDelta
from ._types import Tool as Tool
from ._types import ToolCall as ToolCall
from ._types import ToolResult as ToolResult
from ._types import Usage as Usage

__all__ = (
    "AnthropicModel",
    "Done",
    "Message",
    "Model",
    "ModelError",
    "ModelEvent",
    "ModelRateLimited",
    "ModelRejected",
    "ModelServerError",
    "ModelStream",
    "ModelUnavailable",
    "OpenAIModel",
    "StopReason",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
    "estimate_tokens",
)

_publish(__name__, globals())

"""The LLM layer: one model protocol, adapters on the official SDKs, a local server.

``AnthropicModel`` and ``OpenAIModel`` wrap ``anthropic.AsyncAnthropic`` and
``openai.AsyncOpenAI``; both yield the same events (:class:`TextDelta`,
:class:`ToolCall`, :class:`Usage`, :class:`Done`) from ``model.stream(...)``, and
leaving the ``async with`` block for any reason closes the HTTP response, so the
provider stops generating. :mod:`cancelkit.llm.local` is a server speaking both
protocols, for tests and demos without an API key.
"""

from ._anthropic import AnthropicModel as AnthropicModel
from ._openai import OpenAIModel as OpenAIModel
from ._stream import ModelStream as ModelStream
from ._types import Done as Done
from ._types import Message as Message
from ._types import Model as Model
from ._types import ModelEvent as ModelEvent
from ._types import StopReason as StopReason
from ._types import TextDelta as TextDelta
from ._types import Tool as Tool
from ._types import ToolCall as ToolCall
from ._types import ToolResult as ToolResult
from ._types import Usage as Usage
from ._types import estimate_tokens as estimate_tokens

__all__ = (
    "AnthropicModel",
    "Done",
    "Message",
    "Model",
    "ModelEvent",
    "ModelStream",
    "OpenAIModel",
    "StopReason",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
    "estimate_tokens",
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("cancelkit.llm."):
        _obj.__module__ = __name__
del _name, _obj

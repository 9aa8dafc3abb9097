"""Stop means stop for the agent frameworks people already use.

- :mod:`cancelkit.integrations.pydantic_ai` (extra ``pydantic-ai``),
  :mod:`cancelkit.integrations.openai_agents` (extra ``openai-agents``) and
  :mod:`cancelkit.integrations.langgraph` (extra ``langgraph``) turn a framework's
  run into a cancelkit run: cancel it by id from any task, thread or process, with a
  reason; the framework's own cancel and cancelkit's bridged both ways; no task the
  framework starts outlives the run; a receipt with the usage of cut-off turns.
- Here, for all of them: :func:`metered_http_client`, the HTTP client under the
  ``openai`` SDK that keeps the usage of a stream cut off by a Stop (extra
  ``openai``). Sync tools are made stoppable with :func:`cancelkit.stoppable`.
"""

from .._module import publish as _publish
from ._metering import MeteredTransport as MeteredTransport
from ._metering import StreamMeter as StreamMeter
from ._metering import metered_http_client as metered_http_client

__all__ = ("MeteredTransport", "StreamMeter", "metered_http_client")

_publish(__name__, globals())

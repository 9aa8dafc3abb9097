"""``cancelkit.agent``: an agent runtime in which one Stop reaches every layer.

An application of the library (layer 5 of DESIGN.md): built only on the layers
below it, the primitives, runs, transactions and :mod:`cancelkit.llm`.
"""

from .._module import publish as _publish
from ._agent import Agent as Agent
from ._agent import current_transaction as current_transaction
from ._events import AgentResult as AgentResult
from ._events import AgentRun as AgentRun
from ._events import ToolFinished as ToolFinished
from ._tools import FunctionTool as FunctionTool
from ._tools import tool as tool

__all__ = (
    "Agent",
    "AgentResult",
    "AgentRun",
    "FunctionTool",
    "ToolFinished",
    "current_transaction",
    "tool",
)

_publish(__name__, globals())

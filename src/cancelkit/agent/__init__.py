"""``cancelkit.agent``: an agent runtime in which one Stop reaches every layer."""

from ._agent import Agent as Agent
from ._agent import AgentResult as AgentResult
from ._agent import AgentRun as AgentRun
from ._agent import ToolFinished as ToolFinished
from ._agent import current_transaction as current_transaction
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

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name

"""Stop means stop for LangGraph (extra ``langgraph``): a graph run is a cancelkit run.

Usage::

    from cancelkit.integrations.langgraph import start_graph

    run = start_graph(runs, graph, {"messages": [("user", prompt)]}, run_id="req-1")
    runs.cancel("req-1", CancelReason("user", "Stop"))  # any task, thread, process

See :func:`run_graph` for what is bridged: cancelkit's Stop and LangGraph's own
``RunControl.request_drain()`` end the run with one reason; no task of the graph
outlives it; :class:`GraphPartial` is what a stopped run hands back. Asyncio only.
"""

from .._module import publish as _publish
from ._langgraph import GraphPartial, run_graph, start_graph

__all__ = ("GraphPartial", "run_graph", "start_graph")

_publish(__name__, globals())

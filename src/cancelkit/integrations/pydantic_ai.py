"""pydantic-ai runs as cancelkit runs: Stop by id, with a reason, and it stops.

``start_agent(runs, agent, prompt, run_id=...)`` (or ``runs.start(run_agent, agent,
prompt)``) runs ``agent.run(prompt)`` as a :class:`cancelkit.Run`, so it is cancelled
by id from any task, any thread, or (with a backend) any process. Inside it:

- the two cancels are bridged both ways: cancelkit's Stop fires pydantic-ai's own
  :class:`pydantic_ai.CancellationToken` (the framework unwinds its own way: the
  model stream closed, the tool tasks cancelled and drained, the messages so far
  kept); pydantic-ai's own cancel (``AgentRun.cancel()``, ``RunContext.cancel()``,
  the ``CancellationToken`` passed in, its ``timeout=``) ends the cancelkit run
  ``cancelled`` with a reason naming it;
- the run is streamed (an ``event_stream_handler`` that drains the events, unless
  one is given), so a model client built on
  :func:`cancelkit.integrations.metered_http_client` puts the usage of a cut-off
  turn in the receipt;
- every task pydantic-ai starts is adopted (:func:`cancelkit.adopt_tasks`): none
  outlives the run; sync tools wrapped in :func:`cancelkit.stoppable` stop at their
  next ``current_token().check()``;
- what the run had when it stopped is kept: ``outcome.partial`` is an
  :class:`AgentPartial` (the messages and the text so far).

pydantic-ai runs on asyncio only: under trio these raise a clear error.
"""

from .._module import publish as _publish
from ._pydantic_ai import AgentPartial, run_agent, start_agent

__all__ = ("AgentPartial", "run_agent", "start_agent")

_publish(__name__, globals())

"""``cancelkit.demo``: the applications that show the library at work.

Layer 5 of DESIGN.md, beside :mod:`cancelkit.agent` and built on it: the demo web
service (``_app.py`` its routes, ``_events.py`` what a run's events look like on the
wire, ``_state.py`` its sessions and limits, ``_page.py`` its single page), its
wiring (``_serve.py``, with the local model process in ``_model_process.py`` and the
agent and tools in ``_agent.py``), the same service in several processes
(``_workers.py`` the parent, ``_worker.py`` one worker, ``_feeds.py`` the runs' event
streams in Redis, ``_redis_server.py`` a private Redis), the terminal demonstration
(``_terminal.py``) and the ``cancelkit`` command line (``_cli.py``, also
``python -m cancelkit``). Nothing here is API: the library never imports it.
"""

__all__ = ()

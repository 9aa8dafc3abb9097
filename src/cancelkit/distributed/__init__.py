"""Stop across processes and hosts: backends shared by every process's ``Runs``.

``Runs(backend=RedisBackend(url))`` (or ``PostgresBackend(dsn)`` for services with no
Redis): :meth:`cancelkit.Runs.stop` then reaches a run in any process and
:meth:`cancelkit.Runs.find` reports any process's run. Both need asyncio; each needs its
extra (``pip install "cancelkit[redis]"`` or ``"cancelkit[postgres]"``). The interface
they implement, :class:`cancelkit.RunsBackend`, what a lookup returns,
:class:`cancelkit.RunInfo`, and :class:`cancelkit.BackendUnavailable` live in
``cancelkit`` itself. :class:`RedisServer` starts a throwaway ``redis-server`` on a unix
socket (for development, tests and examples), gone with its owner.
"""

from .._module import publish as _publish
from ._postgres import PostgresBackend as PostgresBackend
from ._redis import RedisBackend as RedisBackend
from ._redis_server import RedisServer as RedisServer

__all__ = ("PostgresBackend", "RedisBackend", "RedisServer")

_publish(__name__, globals())

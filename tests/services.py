"""The real services the suite starts, for any test folder: PostgreSQL and Redis.

PostgreSQL runs from the binaries on the machine (``initdb``, ``pg_ctl``), in a
temporary folder, listening on a unix socket only (``PostgresServer``): a watchdog
process stops it and removes the folder when the session ends, however it ends (it
waits for the end of a pipe only the session holds, which the kernel closes when
pytest exits or is killed). As root, the server runs as ``nobody``. Redis is Debian's
``redis-server`` (``scripts/test`` installs it), on a unix socket in a temporary
folder, ended with the session (or by the kernel, if pytest is killed). A missing
binary fails the tests that need it: they are never skipped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cancelkit.distributed import RedisServer
from cancelkit.stores._postgres_server import PostgresServer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    try:
        server = PostgresServer(
            fsync=False,
            settings=(
                "max_connections=200",
                "client_connection_check_interval=100ms",  # notice killed clients mid-query
            ),
            stop_mode="immediate",
        )
    except RuntimeError as exc:  # not installed: the tests that need it fail, never skip
        pytest.fail(f"{exc}; the store tests need it")
    with server:
        yield server.dsn


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session (no persistence); tests use their own key prefixes."""
    try:
        server = RedisServer()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url

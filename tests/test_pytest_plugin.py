"""The orphan-detecting pytest plugin catches each kind of leftover, on both backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_subject=source)
    return pytester.runpytest_subprocess("-p", "anyio", "-p", "cancelkit.testing.pytest_plugin")


def test_a_leftover_task_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import anyio, pytest
from cancelkit import Background

@pytest.mark.anyio
async def test_leaks_a_task():
    Background("forgotten").spawn(anyio.sleep(30), name="forgotten-pump")
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*task still running: forgotten-pump*"])


def test_an_unclosed_async_generator_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import anyio, pytest

KEEP = []

async def tokens():
    while True:
        await anyio.sleep(0)
        yield 1

@pytest.mark.anyio
async def test_leaves_a_stream_open():
    stream = tokens()
    KEEP.append(stream)
    await stream.__anext__()
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*async generator never closed: tokens*"])


def test_a_leftover_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import threading

STOP = threading.Event()

def test_leaks_a_thread():
    threading.Thread(target=STOP.wait, args=(5,), name="stuck-worker", daemon=True).start()
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*left threads running: stuck-worker*"])


def test_clean_tests_and_marked_tests_pass(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import anyio, pytest
from cancelkit import Background, gather

@pytest.mark.anyio
async def test_clean():
    async with Background() as background:
        background.spawn(anyio.sleep(30))
    await gather(anyio.sleep(0), anyio.sleep(0))

@pytest.mark.anyio
@pytest.mark.allow_orphans
async def test_allowed():
    Background().spawn(anyio.sleep(30))
""",
    )
    result.assert_outcomes(passed=4)

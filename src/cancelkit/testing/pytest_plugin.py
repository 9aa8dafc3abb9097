"""pytest plugin: fail any test that leaves tasks, threads or async generators behind.

Enable it with ``-p cancelkit.testing.pytest_plugin`` (or ``pytest_plugins = [...]``
in a ``conftest.py``). After each test:

- **tasks** (async tests run by the anyio plugin, on asyncio or trio): any task
  started during the test and still running when it returns is an orphan;
- **async generators** first iterated during the test and neither exhausted nor
  closed when it returns are unclosed;
- **threads** started during the test and still alive a moment after it are leaked.
  Idle threads of known pools (cancelkit's own, asyncio's default executor, anyio's
  and trio's thread caches) are pool capacity, not leaks, and are not counted.

Give the leftovers up to ``cancelkit_orphan_grace`` seconds (ini option, default 1) to
finish on their own. Mark a test ``@pytest.mark.allow_orphans`` to skip the check.
"""

from __future__ import annotations

import functools
import gc
import inspect
import re
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import anyio
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator

__all__ = ()

_POOL_THREADS = re.compile(
    r"^(cancelkit-deadlines|cancelkit-worker-\d+|cancelkit-sqlite-\d+|asyncio_\d+|"
    r"AnyIO worker thread|Trio thread \d+|ThreadPoolExecutor-\d+_\d+)$"
)


_MIN_ROUNDS = 50


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "cancelkit_orphan_grace",
        "seconds leftovers get to finish after a test before they count as orphans",
        default="1.0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_orphans: do not fail this test for leftover tasks or threads"
    )


def _grace(config: pytest.Config) -> float:
    return float(config.getini("cancelkit_orphan_grace"))


def _live_tasks() -> set[object]:
    try:
        import asyncio  # noqa: PLC0415

        return set(asyncio.all_tasks())
    except RuntimeError:
        pass
    import trio  # noqa: PLC0415

    root = trio.lowlevel.current_root_task()
    tasks: set[object] = set()
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        tasks.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return tasks


def _describe_task(task: Any) -> str:
    name = task.get_name() if hasattr(task, "get_name") else task.name
    coro = getattr(task, "get_coro", lambda: getattr(task, "coro", None))()
    where = getattr(getattr(coro, "cr_frame", None), "f_code", None)
    return f"{name}" + (f" (at {where.co_name})" if where is not None else "")


def _with_orphan_check(
    test: Callable[..., Coroutine[Any, Any, Any]], grace: float
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(test)
    async def checked(**kwargs: Any) -> Any:
        before = _live_tasks()
        generators: weakref.WeakSet[Any] = weakref.WeakSet()
        hooks = sys.get_asyncgen_hooks()

        def firstiter(generator: Any) -> None:
            generators.add(generator)
            if hooks.firstiter is not None:
                hooks.firstiter(generator)

        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=hooks.finalizer)
        try:
            result = await test(**kwargs)
        finally:
            sys.set_asyncgen_hooks(*hooks)
        current = anyio.get_current_task()
        deadline = time.monotonic() + grace
        # Cleanup that is already under way (a finaliser's aclose(), a cancelled task
        # unwinding) needs loop iterations, not seconds: on a machine loaded enough,
        # a second of wall clock holds few of them. So leftovers always get at least
        # _MIN_ROUNDS rounds of (collect, yield to the loop), and ``grace`` seconds.
        rounds = 0
        while True:
            gc.collect()
            orphans = [
                task
                for task in _live_tasks() - before
                if not (hasattr(task, "done") and task.done()) and id(task) != current.id
            ]
            unclosed = [g for g in generators if g.ag_frame is not None]
            rounds += 1
            if not (orphans or unclosed):
                break
            if rounds >= _MIN_ROUNDS and time.monotonic() > deadline:
                break
            # Drop our own references first, or they alone keep a finished
            # generator from being finalised by the next collection.
            del orphans, unclosed
            await anyio.sleep(0.01)
        problems = [f"task still running: {_describe_task(task)}" for task in orphans]
        problems += [f"async generator never closed: {g.__qualname__}" for g in unclosed]
        if problems:
            listing = "\n  ".join(problems)
            raise AssertionError(f"cancelkit: the test left work behind:\n  {listing}")
        return result

    return checked


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    if pyfuncitem.get_closest_marker("allow_orphans") is None and inspect.iscoroutinefunction(
        pyfuncitem.obj
    ):
        pyfuncitem.obj = _with_orphan_check(pyfuncitem.obj, _grace(pyfuncitem.config))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    before = set(threading.enumerate())
    result = yield
    if item.get_closest_marker("allow_orphans") is not None:
        return result
    deadline = time.monotonic() + _grace(item.config)
    rounds = 0
    while True:
        leaked = [
            thread
            for thread in set(threading.enumerate()) - before
            if thread.is_alive() and not _POOL_THREADS.match(thread.name)
        ]
        rounds += 1
        if not leaked or (rounds >= _MIN_ROUNDS and time.monotonic() > deadline):
            break
        time.sleep(0.01)  # a thread that is ending gets the CPU meanwhile
    if leaked:
        names = ", ".join(sorted(thread.name for thread in leaked))
        raise AssertionError(f"cancelkit: the test left threads running: {names}")
    return result

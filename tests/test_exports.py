"""The public surface: complete, sorted, and reporting ``cancelkit`` as its home."""

from __future__ import annotations

import inspect
import types

import pytest

import cancelkit
import cancelkit.agent
import cancelkit.distributed
import cancelkit.integrations
import cancelkit.integrations.langgraph
import cancelkit.integrations.pydantic_ai
import cancelkit.llm
import cancelkit.llm.local
import cancelkit.stores
import cancelkit.testing
import cancelkit.web

PUBLIC = [
    cancelkit,
    cancelkit.agent,
    cancelkit.distributed,
    cancelkit.integrations,
    cancelkit.integrations.langgraph,
    cancelkit.integrations.pydantic_ai,
    cancelkit.llm,
    cancelkit.llm.local,
    cancelkit.stores,
    cancelkit.testing,
    cancelkit.web,
]


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_all_is_sorted_and_complete(module: types.ModuleType) -> None:
    assert list(module.__all__) == sorted(module.__all__)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(module.__all__)


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_public_objects_report_their_public_module(module: types.ModuleType) -> None:
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):  # not type aliases
            assert value.__module__ == module.__name__, name


def test_every_exception_is_defined_once_in_the_exceptions_module() -> None:
    # Re-exported where users look for them, defined in one place.
    import cancelkit._exceptions as home  # noqa: PLC0415

    for module in PUBLIC:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException | Warning):
                assert getattr(home, name, None) is value, f"{module.__name__}.{name}"

"""The public surface: complete, sorted, and reporting ``cancelkit`` as its home."""

from __future__ import annotations

import inspect
import types

import pytest

import cancelkit
import cancelkit.testing


@pytest.mark.parametrize("module", [cancelkit, cancelkit.testing], ids=lambda m: m.__name__)
def test_all_is_sorted_and_complete(module: types.ModuleType) -> None:
    assert list(module.__all__) == sorted(module.__all__)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(module.__all__)


@pytest.mark.parametrize("module", [cancelkit, cancelkit.testing], ids=lambda m: m.__name__)
def test_public_objects_report_their_public_module(module: types.ModuleType) -> None:
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):  # not type aliases
            assert value.__module__ == module.__name__, name

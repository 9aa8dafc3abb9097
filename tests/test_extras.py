"""A missing optional dependency is an error that names the extra to install."""

from __future__ import annotations

import sys

import pytest

from cancelkit._extras import require


def test_a_missing_module_names_the_extra_to_install() -> None:
    with pytest.raises(ImportError, match=r'X needs no_such_module: pip install "cancelkit\[y\]"'):
        require("no_such_module.sub", "y", "X")
    assert require("json", "y", "X") is sys.modules["json"]


def test_redis_backend_without_redis_py_names_the_redis_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cancelkit.distributed import RedisBackend  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "cancelkit\[redis\]"'):
        RedisBackend("redis://127.0.0.1:6379/0")


def test_langgraph_integration_without_langgraph_names_the_langgraph_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):
        if name.startswith("cancelkit.integrations.") and "langgraph" in name:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "langgraph.errors", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "cancelkit\[langgraph\]"'):
        import cancelkit.integrations.langgraph  # noqa: F401, PLC0415

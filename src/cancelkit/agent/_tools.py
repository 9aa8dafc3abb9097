"""Tools an agent can call: async or sync functions, and sub-agents."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from ..llm import Tool

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("FunctionTool", "tool")

_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


@dataclass(frozen=True)
class FunctionTool:
    """A function offered to the model as a tool.

    Async functions are awaited; sync functions run in a worker thread through
    :func:`cancelkit.to_thread`, where ``current_token()`` is the run's Stop.
    """

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> Tool:
        return Tool(self.name, self.description, self.parameters)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def _schema(fn: Callable[..., Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required = []
    for name, parameter in inspect.signature(fn).parameters.items():
        properties[name] = {"type": _JSON_TYPES.get(hints.get(name, str), "string")}
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Any:
    """Make a function a tool; its JSON schema comes from its signature.

    Usage: ``@tool`` or ``@tool(name="search", description="...")``.
    """

    def wrap(function: Callable[..., Any]) -> FunctionTool:
        if not callable(function):
            raise TypeError(f"tool() needs a function, not {type(function).__name__}")
        doc = inspect.getdoc(function) or ""
        return FunctionTool(
            name or function.__name__,
            description or (doc.splitlines()[0] if doc else function.__name__),
            function,
            _schema(function),
        )

    return wrap(fn) if fn is not None else functools.partial(wrap)

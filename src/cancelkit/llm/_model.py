"""The ``Model`` protocol: what an agent needs from a model, whatever the provider.

It sits apart from the vocabulary (:mod:`._types`) because its one method returns a
:class:`~cancelkit.llm.ModelStream`, which is built from that vocabulary: kept here,
the types, the stream and the protocol import one another in one direction only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._budget import Budget
    from .._token import CancelToken
    from ._stream import ModelStream
    from ._types import Message, Tool

__all__ = ("Model",)


class Model(Protocol):
    """What an agent needs from a model: one call, streamed, stoppable."""

    name: str

    def stream(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] = (),
        max_tokens: int = 1024,
        token: CancelToken | None = None,
        budget: Budget | None = None,
    ) -> ModelStream:
        """Start a call; iterate its events inside ``async with``."""
        ...

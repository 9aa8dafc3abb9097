"""One token estimate for the whole LLM layer: ``ceil(characters / 4)``.

Budgets reserve input before a call and count output before the provider reports it,
so both need a number that no provider gives in advance. Four characters a token is a
fair rule of thumb for real providers and exact for the local model (whose tokens are
four characters by construction), so every estimate in cancelkit comes from here.
"""

from __future__ import annotations

__all__ = ("TOKEN_CHARS", "estimate_tokens")

TOKEN_CHARS = 4
"""Characters in one token: estimated for providers, exact for the local model."""


def estimate_tokens(text: str | int) -> int:
    """A provider-neutral estimate of the tokens in ``text``: ``ceil(characters / 4)``.

    Used for the input side of budget reservations and for output counted so far when a
    stream is stopped before the provider reports usage. Exact for the local model.

    Args:
        text: the text, or its length in characters (what a stream keeps as it goes).
    """
    chars = text if isinstance(text, int) else len(text)
    return -(-chars // TOKEN_CHARS)

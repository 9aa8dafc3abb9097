"""One token estimate: ``ceil(characters / 4)``, from text or from a character count."""

from __future__ import annotations

import pytest

from cancelkit.llm import estimate_tokens
from cancelkit.llm.local import count_tokens


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2)])
def test_the_estimate_rounds_up(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens
    assert estimate_tokens(len(text)) == tokens
    assert count_tokens(text) == tokens  # the local model counts exactly the estimate

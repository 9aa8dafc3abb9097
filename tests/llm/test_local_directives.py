"""The local model refuses absurd directives with a clear 400 (issue #9).

``nan``, negative or absurd values once crashed the stream mid-way (a dropped
connection), made it endless (``[[rate:1e-9]]``), or were silently taken. Now
``plan()`` names the directive and its allowed range, the server answers 400 with the
provider's error body, and the official SDKs raise their ``BadRequestError`` with it.
"""

from __future__ import annotations

import math
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from cancelkit.llm.local import LocalModelConfig, LocalModelServer
from cancelkit.llm.local._script import RequestError, plan

from .conftest import anthropic_client, openai_client

# (directive, what the error must say)
BAD = [
    ("[[tokens:-5]]", r"\[\[tokens:N\]\].*from 0 to 1000000"),
    ("[[tokens:nan]]", r"\[\[tokens:N\]\].*from 0 to 1000000"),
    ("[[tokens:1000000000000]]", r"\[\[tokens:N\]\].*from 0 to 1000000"),
    ("[[tokens:1.5]]", r"\[\[tokens:N\]\].*whole number"),
    ("[[rate:nan]]", r"\[\[rate:R\]\].*from 1 to 1000000"),
    ("[[rate:inf]]", r"\[\[rate:R\]\].*from 1 to 1000000"),
    ("[[rate:-1]]", r"\[\[rate:R\]\].*from 1 to 1000000"),
    ("[[rate:0]]", r"\[\[rate:R\]\].*from 1 to 1000000"),
    ("[[rate:1e-9]]", r"\[\[rate:R\]\].*from 1 to 1000000"),
    ("[[fault:429 retry-after=nan]]", r"retry-after=S.*from 0 to 300"),
    ("[[fault:429 retry-after=-1]]", r"retry-after=S.*from 0 to 300"),
    ("[[fault:529 retry-after=1e300]]", r"retry-after=S.*from 0 to 300"),
    ("[[fault:429 times=-1]]", r"times=N.*from 0 to 1000000"),
    ("[[fault:429 times=2.5]]", r"times=N.*whole number"),
    ("[[fault:429 tries=2]]", r"unknown option.*tries"),
    ("[[fault:slow-first-token=nan]]", r"slow-first-token=S.*from 0 to 300"),
    ("[[fault:slow-first-token=-1]]", r"slow-first-token=S.*from 0 to 300"),
    ("[[fault:slow-first-token=inf]]", r"slow-first-token=S.*from 0 to 300"),
    ("[[fault:cut-after=-2]]", r"cut-after=N.*from 0 to 1000000"),
    ("[[fault:error-after=-2]]", r"error-after=N.*from 0 to 1000000"),
    ("[[fault:error-after=99999999999]]", r"error-after=N.*from 0 to 1000000"),
    ("[[fault:end-after=-2]]", r"end-after=N.*from 0 to 1000000"),
    ("[[fault:ignore-max-tokens=3]]", r"ignore-max-tokens.*takes no value"),
    ("[[label:two words]]", r"label:TEXT.*1 to 100"),
    ("[[label:" + "x" * 101 + "]]", r"label:TEXT.*1 to 100"),
]


def reply(directive: str, max_tokens: int | None = 100) -> Any:
    return plan(
        prompt_text=directive,
        directive_text=directive,
        tool_results=[],
        max_tokens=max_tokens,
        default_tokens=10,
    )


@pytest.mark.parametrize(("directive", "says"), BAD, ids=[d for d, _ in BAD])
def test_plan_refuses_absurd_values(directive: str, says: str) -> None:
    with pytest.raises(RequestError, match=says):
        reply(directive)


def test_plan_takes_the_edges_of_each_range() -> None:
    assert reply("[[tokens:0]]").output_tokens == 0
    assert reply("[[tokens:100000]]", max_tokens=None).output_tokens == 100_000
    assert reply("[[rate:1]]").rate == 1.0
    assert reply("[[rate:1000000]]").rate == 1e6
    edge = reply("[[fault:429 retry-after=300 times=0]]")
    assert (edge.fault.retry_after, edge.fault.times) == (300.0, 0)
    assert reply("[[fault:slow-first-token=0]]").first_token_latency == 0.0
    assert reply("[[fault:cut-after=0]]").fault.after_tokens == 0
    assert (
        reply("[[fault:end-after=0]]").fault.kind,
        reply("[[fault:end-after=7]]").fault.after_tokens,
    ) == ("end", 7)
    assert reply("[[label:bench-7.s:3_x]]").label == "bench-7.s:3_x"
    assert reply("[[tokens:3]]").label is None


# Through the SDKs: each directive once, with the values that crashed or hung the stream.
CRASHED_OR_HUNG = {
    "[[tokens:-5]]",
    "[[tokens:1000000000000]]",
    "[[rate:nan]]",
    "[[rate:1e-9]]",
    "[[fault:529 retry-after=1e300]]",
    "[[fault:429 times=-1]]",
    "[[fault:slow-first-token=nan]]",
    "[[fault:cut-after=-2]]",
    "[[fault:error-after=-2]]",
}
THROUGH_SDKS = [(directive, says) for directive, says in BAD if directive in CRASHED_OR_HUNG]


@pytest.mark.anyio
@pytest.mark.parametrize(("directive", "says"), THROUGH_SDKS, ids=[d for d, _ in THROUGH_SDKS])
async def test_the_sdks_get_a_clear_400(
    server: LocalModelServer, directive: str, says: str
) -> None:
    """Streaming or not, either protocol: a 400 before any token, the server intact."""
    before = server.app.stats()
    messages: Any = [{"role": "user", "content": f"Go {directive}"}]
    client = anthropic_client(server)
    oclient = openai_client(server)
    try:
        with pytest.raises(anthropic.BadRequestError, match=says):
            await client.messages.create(
                model="local", max_tokens=10, messages=messages, stream=True
            )
        with pytest.raises(openai.BadRequestError, match=says):
            await oclient.chat.completions.create(model="local", messages=messages)
        # The server is unharmed: the next request is served.
        ok = await client.messages.create(
            model="local", max_tokens=3, messages=[{"role": "user", "content": "[[tokens:3]]"}]
        )
    finally:
        await client.close()
        await oclient.close()
    assert ok.usage.output_tokens == 3
    after = server.app.stats()
    assert after["bad_requests"] - before["bad_requests"] == 2
    assert after["tokens_generated"] - before["tokens_generated"] == 3


@pytest.mark.anyio
async def test_max_tokens_must_be_a_real_positive_int(server: LocalModelServer) -> None:
    async with httpx2.AsyncClient(base_url=server.base_url) as raw:
        for path, key in (("/v1/chat/completions", "max_tokens"), ("/v1/messages", "max_tokens")):
            for bad in (True, 0, -3, 2.5, "9"):
                body = {"model": "local", key: bad, "messages": [{"role": "user", "content": "hi"}]}
                response = await raw.post(path, json=body)
                assert response.status_code == 400, (path, bad)
                assert "max_tokens" in response.text


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("rate", math.nan, "rate"),
        ("rate", math.inf, "rate"),
        ("rate", 0.0, "rate"),
        ("rate", 1e-9, "rate"),
        ("chunk_tokens", 0, "chunk_tokens"),
        ("chunk_tokens", 2.5, "chunk_tokens"),
        ("chunk_tokens", True, "chunk_tokens"),
        ("first_token_latency", math.nan, "first_token_latency"),
        ("first_token_latency", -0.1, "first_token_latency"),
        ("first_token_latency", 1e9, "first_token_latency"),
        ("default_tokens", -1, "default_tokens"),
        ("default_tokens", 10**12, "default_tokens"),
        ("default_tokens", 3.0, "default_tokens"),
    ],
)
def test_the_config_refuses_absurd_numbers(field: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=rf"LocalModelConfig\({says}=.*from"):
        LocalModelConfig(**{field: value})


def test_the_config_takes_sensible_numbers() -> None:
    config = LocalModelConfig(rate=1, chunk_tokens=1000, first_token_latency=0, default_tokens=0)
    assert (config.rate, config.chunk_tokens, config.default_tokens) == (1, 1000, 0)

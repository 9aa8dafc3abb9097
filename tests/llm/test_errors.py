"""The SDKs' failures come out as cancelkit's, the SDK's own kept as the cause."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import anthropic
import httpx2
import openai
import pytest

from cancelkit.llm import (
    AnthropicModel,
    Message,
    Model,
    ModelError,
    ModelRateLimited,
    ModelRejected,
    ModelServerError,
    ModelUnavailable,
    OpenAIModel,
)
from cancelkit.llm._errors import sdk_errors

from .conftest import anthropic_client, openai_client

if TYPE_CHECKING:
    from cancelkit.llm.local import LocalModelServer

pytestmark = pytest.mark.anyio


async def failure(model: Model, prompt: str) -> ModelError:
    """The error of one call to ``model`` with ``prompt``, read to its end."""
    with pytest.raises(ModelError) as info:
        async with model.stream([Message.user(prompt)], max_tokens=100) as stream:
            async for _ in stream:
                pass
    return info.value


def chain(error: BaseException | None) -> list[BaseException]:
    found = []
    while error is not None:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


async def test_429_is_rate_limited_with_retry_after(model: Model) -> None:
    error = await failure(model, "[[fault:429 retry-after=7]]")
    assert isinstance(error, ModelRateLimited)
    assert (error.status, error.retry_after) == (429, 7.0)
    assert error.request_id is not None
    assert isinstance(error.__cause__, anthropic.RateLimitError | openai.RateLimitError)


async def test_overloaded_is_rate_limited(model: Model) -> None:
    error = await failure(model, "[[fault:529]]")
    assert isinstance(error, ModelRateLimited)
    assert (error.status, error.retry_after) == (529, None)


async def test_a_server_error_is_a_server_error(model: Model) -> None:
    error = await failure(model, "[[fault:503]]")
    assert type(error) is ModelServerError
    assert error.status == 503


async def test_a_bad_request_is_rejected(model: Model) -> None:
    error = await failure(model, "[[nope:1]]")
    assert type(error) is ModelRejected
    assert error.status == 400
    assert "unknown directive" in str(error)
    assert isinstance(error.__cause__, anthropic.BadRequestError | openai.BadRequestError)


async def test_a_connection_lost_midstream_is_unavailable(model: Model) -> None:
    error = await failure(model, "[[tokens:30]] [[fault:cut-after=5]]")
    assert isinstance(error, ModelUnavailable)
    assert isinstance(error, ConnectionError)  # `except OSError` code still sees it
    assert any(isinstance(e, httpx2.TransportError) for e in chain(error))


async def test_an_error_event_midstream_is_mapped(model: Model) -> None:
    error = await failure(model, "[[tokens:30]] [[fault:error-after=4]]")
    # Anthropic names it ``overloaded_error``; the OpenAI wire, a ``server_error``.
    expected = ModelRateLimited if isinstance(model, AnthropicModel) else ModelServerError
    assert type(error) is expected
    assert error.status is None  # the stream itself began with a 200


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
async def test_an_unreachable_server_is_unavailable(
    server: LocalModelServer, protocol: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    if protocol == "anthropic":
        client = anthropic.AsyncAnthropic(base_url=url, api_key="local", max_retries=0)
        model: Model = AnthropicModel(client, "local")
    else:
        oclient = openai.AsyncOpenAI(base_url=url + "/v1", api_key="local", max_retries=0)
        model = OpenAIModel(oclient, "local")
    error = await failure(model, "hi")
    assert type(error) is ModelUnavailable
    assert error.provider == protocol
    assert isinstance(error.__cause__, anthropic.APIConnectionError | openai.APIConnectionError)
    # What the web layer looks for to say "the model server is unreachable":
    assert any(isinstance(e, OSError | httpx2.TransportError) for e in chain(error.__cause__))
    await (client if protocol == "anthropic" else oclient).close()


async def test_a_failed_open_is_mapped_whatever_the_client(server: LocalModelServer) -> None:
    for client in (anthropic_client(server), openai_client(server)):
        model: Model = (
            AnthropicModel(client, "local")
            if isinstance(client, anthropic.AsyncAnthropic)
            else OpenAIModel(client, "local")
        )
        error = await failure(model, "[[fault:429]]")
        assert type(error) is ModelRateLimited
        await client.close()


def status_error(status: int, headers: dict[str, str]) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://model.invalid/v1/messages")
    response = httpx2.Response(status, headers=headers, request=request)
    return anthropic.APIStatusError("failed", response=response, body=None)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-1"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict[str, str], seconds: float | None) -> None:
    error = sdk_errors("anthropic").map(status_error(429, headers))
    assert isinstance(error, ModelRateLimited)
    assert error.retry_after == seconds


def test_only_the_sdks_errors_are_mapped() -> None:
    assert sdk_errors("anthropic").map(ValueError("ours")) is None
    assert sdk_errors("openai").map(RuntimeError("ours")) is None

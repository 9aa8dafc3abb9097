"""A local model server per module, and a model adapter per protocol on top of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anthropic
import anyio
import openai
import pytest

from cancelkit.llm import AnthropicModel, Model, OpenAIModel
from cancelkit.llm.local import LocalModelConfig, LocalModelServer, RequestRecord

from .hostile import HostileProvider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(LocalModelConfig(rate=400, first_token_latency=0.0)) as running:
        yield running


def anthropic_client(server: LocalModelServer, retries: int = 0) -> anthropic.AsyncAnthropic:
    # Strict validation: every payload must parse into the SDK's own models.
    return anthropic.AsyncAnthropic(
        base_url=server.base_url,
        api_key="local",
        max_retries=retries,
        _strict_response_validation=True,
    )


def openai_client(server: LocalModelServer, retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="local",
        max_retries=retries,
        _strict_response_validation=True,
    )


@pytest.fixture(params=["anthropic", "openai"])
async def model(request: pytest.FixtureRequest, server: LocalModelServer) -> AsyncIterator[Model]:
    if request.param == "anthropic":
        client = anthropic_client(server)
        yield AnthropicModel(client, "local")
    else:
        oclient = openai_client(server)
        yield OpenAIModel(oclient, "local")
        client = oclient  # type: ignore[assignment]
    await client.close()


async def ended(server: LocalModelServer, request_id: str | None) -> RequestRecord:
    """The server's record of a request, once the server has finished with it."""
    with anyio.fail_after(10):  # a bound for a hang only: it returns as soon as it ends
        while True:
            record = server.app.record(request_id or "")
            if record is not None and record.ended_at is not None:
                return record
            await anyio.sleep(0.005)


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> Iterator[HostileProvider]:
    """A :class:`HostileProvider` of the test's parameters (``indirect``), closed after."""
    hostile = HostileProvider(*request.param)
    yield hostile
    hostile.close()

"""The demo's events on the wire: a follower that fell behind catches up in one write."""

from __future__ import annotations

from dataclasses import asdict

import anyio
import pytest

from cancelkit import Runs
from cancelkit.agent import AgentRun
from cancelkit.demo._events import batches, payload
from cancelkit.llm import TextDelta, ToolCall, Usage

pytestmark = pytest.mark.anyio


async def test_a_follower_behind_gets_what_is_ready_with_its_deltas_joined() -> None:
    release = anyio.Event()

    async def body() -> str:
        await release.wait()
        return "ok"

    run = Runs().start(body)
    state = AgentRun(run)
    sent = batches(state)
    for event in (TextDelta("a"), TextDelta("b"), ToolCall("1", "t", {}), TextDelta("c")):
        state.emit(event)
    assert await sent.__anext__() == [
        ("delta", {"text": "ab"}),
        ("tool_call", {"name": "t", "arguments": {}}),
        ("delta", {"text": "c"}),
    ]
    state.emit(TextDelta("d"))  # one that keeps up gets each event alone, at once
    assert await sent.__anext__() == [("delta", {"text": "d"})]
    release.set()
    done = await sent.__anext__()
    assert [name for name, _ in done] == ["done"]
    assert done[0][1]["status"] == "completed"
    with pytest.raises(StopAsyncIteration):
        await sent.__anext__()


@pytest.mark.parametrize("usage", [Usage(3, 4), Usage(0, 12, estimated=True)])
def test_usage_is_sent_with_every_field_of_usage(usage: Usage) -> None:
    # Written out by hand (asdict's deep copy cost the Stop path): a field added to
    # Usage must not go missing from the events.
    assert payload(usage) == ("usage", asdict(usage))

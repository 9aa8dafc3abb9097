"""guard_stream: whatever ends the iteration, the stream is closed, in this task."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from cancelkit import CancelReason, CancelToken, RunCancelled, guard_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")


@dataclass
class Producer:
    """An LLM-like source: counts what it produced and who closed it."""

    produced: int = 0
    closed_in: list[object] = field(default_factory=list)

    async def tokens(self, delay: float = 0.001) -> AsyncIterator[int]:
        try:
            while True:
                await anyio.sleep(delay)
                self.produced += 1
                yield self.produced
        finally:
            self.closed_in.append(anyio.get_current_task().id)


async def test_breaking_out_closes_the_stream_in_the_iterating_task() -> None:
    producer = Producer()
    async with guard_stream(producer.tokens()) as tokens:
        async for token in tokens:
            if token == 3:
                break
    assert producer.closed_in == [anyio.get_current_task().id]
    produced = producer.produced
    await anyio.sleep(0.02)
    assert producer.produced == produced == 3  # nothing generated after the break


async def test_cancellation_from_outside_closes_the_stream() -> None:
    producer = Producer()
    with anyio.move_on_after(0.02):
        async with guard_stream(producer.tokens()) as tokens:
            async for _ in tokens:
                pass
    assert producer.closed_in == [anyio.get_current_task().id]


async def test_an_error_in_the_body_closes_the_stream_and_propagates_as_itself() -> None:
    producer = Producer()
    with pytest.raises(KeyError, match="parse"):
        async with guard_stream(producer.tokens()) as tokens:
            async for _ in tokens:
                raise KeyError("parse")
    assert len(producer.closed_in) == 1


async def test_a_token_fired_from_another_thread_interrupts_the_wait() -> None:
    producer = Producer()
    token = CancelToken()
    threading.Timer(0.02, token.cancel, args=(USER,)).start()
    with pytest.raises(RunCancelled) as info:
        async with guard_stream(producer.tokens(delay=10), token=token) as tokens:
            async for _ in tokens:
                pass
    assert info.value.reason is USER
    assert producer.closed_in == [anyio.get_current_task().id]


async def test_a_token_fired_while_the_body_works_stops_at_the_next_item() -> None:
    """Only the wait for an item is interrupted: the body's own awaits run to their
    end, and the next item is not read (no chunk after the Stop)."""
    producer = Producer()
    token = CancelToken()
    slept = False
    with pytest.raises(RunCancelled):
        async with guard_stream(producer.tokens(), token=token) as tokens:
            async for _ in tokens:
                token.cancel(USER)
                await anyio.sleep(0.01)
                slept = True
    assert slept
    assert producer.produced == 1
    assert producer.closed_in == [anyio.get_current_task().id]


async def test_awaiting_in_the_block_after_the_stop_ends_it_as_the_stop() -> None:
    """A body that catches the interruption and awaits again is stopped there too,
    and the block ends with the token's reason, not a stray cancellation."""
    producer = Producer()
    token = CancelToken()
    threading.Timer(0.02, token.cancel, args=(USER,)).start()
    with pytest.raises(RunCancelled) as info:
        async with guard_stream(producer.tokens(delay=10), token=token) as tokens:
            with pytest.raises(RunCancelled):
                async for _ in tokens:
                    pass
            await anyio.sleep(10)
    assert info.value.reason is USER
    assert len(producer.closed_in) == 1


async def test_leaving_the_block_cleanly_after_the_token_fired_is_no_error() -> None:
    producer = Producer()
    token = CancelToken()
    async with guard_stream(producer.tokens(), token=token) as tokens:
        async for _ in tokens:
            token.cancel(USER)
            break
    assert producer.closed_in == [anyio.get_current_task().id]


async def test_an_already_cancelled_token_stops_before_reading() -> None:
    producer = Producer()
    token = CancelToken()
    token.cancel(USER)
    with pytest.raises(RunCancelled):
        async with guard_stream(producer.tokens(), token=token) as tokens:
            async for _ in tokens:
                pass
    assert producer.produced == 0


async def test_exhaustion_closes_and_ends_the_iteration() -> None:
    async def three() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async with guard_stream(three()) as items:
        assert [i async for i in items] == [0, 1, 2]
        assert items.closed


class SDKStream:
    """Shaped like the anthropic / openai SDK streams: iterable, with async close()."""

    def __init__(self, sync_close: bool = False) -> None:
        self.closed = False
        self.sync_close = sync_close
        if sync_close:
            self.close = self._close_sync  # type: ignore[method-assign, assignment]

    def __aiter__(self) -> AsyncIterator[str]:
        return self._events()

    async def _events(self) -> AsyncIterator[str]:
        while True:
            await anyio.sleep(0.001)
            yield "delta"

    async def close(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.closed = True

    def _close_sync(self) -> None:
        self.closed = True


@pytest.mark.parametrize("sync_close", [False, True], ids=["async-close", "sync-close"])
async def test_sdk_style_streams_are_closed(sync_close: bool) -> None:
    stream = SDKStream(sync_close)
    async with guard_stream(stream) as events:
        async for _ in events:
            break
    assert stream.closed


async def test_a_hanging_close_is_bounded_by_grace(caplog: pytest.LogCaptureFixture) -> None:
    class Hangs:
        def __aiter__(self) -> AsyncIterator[int]:
            return self._items()

        async def _items(self) -> AsyncIterator[int]:
            yield 1

        async def close(self) -> None:
            await anyio.sleep(10)

    started = anyio.current_time()
    with caplog.at_level(logging.WARNING, logger="cancelkit"):
        async with guard_stream(Hangs(), grace=0.05) as items:
            async for _ in items:
                break
    assert anyio.current_time() - started < 5  # bounded by the grace, not close()'s 10 s
    assert "longer than 0.05s" in caplog.text


async def test_a_stream_stopped_by_another_call_than_its_own_close() -> None:
    """As openai-agents: ``aclose()`` of ``stream_events()`` waits for the whole run,
    ``result.cancel()`` stops it at once; ``close=`` is called first, then the iterator
    is closed (promptly, now that its producer stopped)."""

    class Result:
        def __init__(self) -> None:
            self.cancelled = False
            self.stopped = anyio.Event()
            self.calls: list[str] = []

        def cancel(self) -> None:
            self.calls.append("cancel")
            self.cancelled = True
            self.stopped.set()

        async def stream_events(self) -> AsyncIterator[int]:
            try:
                while not self.cancelled:
                    await anyio.sleep(0.001)
                    yield 1
            finally:
                self.calls.append("closed")
                await self.stopped.wait()  # what aclose() alone would wait for

    result = Result()
    token = CancelToken()
    with anyio.fail_after(5):  # a hang would be the bug
        with pytest.raises(RunCancelled):
            async with guard_stream(result.stream_events(), token=token, close=result.cancel) as ev:
                async for _ in ev:
                    token.cancel(USER)
    assert result.calls == ["cancel", "closed"]
    with pytest.raises(TypeError, match="close must be callable"):
        guard_stream(SDKStream(), close="cancel")  # type: ignore[arg-type]


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="not async-iterable"):
        guard_stream([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="token must be a CancelToken"):
        guard_stream(SDKStream(), token="stop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        guard_stream(SDKStream(), grace=-1)
    block = guard_stream(SDKStream())
    with pytest.raises(RuntimeError, match="inside its `async with`"):
        await block.__anext__()

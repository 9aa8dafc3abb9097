"""The Stop receipt: what a run's Stop stopped, and when, layer by layer.

Every run ends with a receipt (``run.outcome.receipt``): the reason and where the
Stop came from, when it was asked, and when each layer had stopped: the run's task,
each child task and child run, each stream closed (a model stream with its usage,
reported or estimated), each worker thread returned or abandoned, each transaction
committed or not; and the tool calls started, finished and prevented.

Layers report what they know as they end, to the run they run in (found through a
context variable, so no layer imports the run): :func:`record`, and the tool
counters. It is cheap by construction: the run's list of entries is made on the
first entry, a layer's report is one context lookup and one append, and the receipt
itself is built only when somebody reads it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._exceptions import CancelReason

__all__ = (
    "Layer",
    "LayerStop",
    "Recording",
    "StopReceipt",
    "current_recording",
    "keep_partial",
    "record",
    "tool_finished",
    "tool_prevented",
    "tool_started",
)

Layer = Literal["run", "task", "child run", "stream", "thread", "transaction", "tool"]
"""The layers a receipt names, from the run's own task down to its tools."""


@dataclass(frozen=True, slots=True)
class LayerStop:
    """One layer's end, as it reported it.

    Attributes:
        layer: which kind of layer (``task``, ``stream``, ``thread``...).
        name: which one (a task's name, a model, a tool's function).
        outcome: how it ended: ``completed``, ``cancelled``, ``failed`` for tasks,
            runs and tools; ``closed`` (before its end), ``finished`` or ``failed``
            (a model stream whose provider failed: ``detail`` has the error) for streams;
            ``returned``, ``cancelled``, ``failed``, ``abandoned`` or ``withdrawn``
            for threads; ``committed``, ``cancelled``, ``failed`` or ``unknown`` for
            transactions.
        at: when, in seconds since the epoch.
        after_stop: seconds from the Stop until this layer had stopped (negative:
            it had ended before the Stop); ``None`` when the run was not stopped.
        input_tokens, output_tokens, estimated: a stream's usage, where it has one
            (``estimated``: counted from what arrived, the provider's count never came).
        detail: anything else worth a word.
    """

    layer: Layer
    name: str
    outcome: str
    at: float
    after_stop: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    estimated: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for an API, a log line, a page)."""
        return {
            "layer": self.layer,
            "name": self.name,
            "outcome": self.outcome,
            "at": self.at,
            "after_stop_ms": None if self.after_stop is None else round(self.after_stop * 1e3, 3),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "estimated": self.estimated,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class StopReceipt:
    """What a run's Stop stopped, and when: every run ends with one.

    Attributes:
        run_id, status, reason: the run and how it ended (``status`` as the run's:
            ``completed``, ``cancelled`` or ``failed``).
        source: where the Stop came from (``Runs.cancel in thread MainThread``,
            ``the token's deadline``, ``another process``...); ``None`` if not stopped.
        started_at, asked_at, ended_at: seconds since the epoch: the run's start,
            the Stop (``None`` if none came), the end of the run and its children.
        layers: each layer's end, in the order they ended.
        tools_started, tools_finished, tools_prevented: tool calls begun; ended
            (whatever the outcome); asked for but never begun because of the Stop.
        input_tokens, output_tokens, estimated: the usage of every stream of the
            run, child runs included; ``estimated`` if any count is an estimate.
    """

    run_id: str
    status: str
    reason: CancelReason | None
    source: str | None
    started_at: float
    asked_at: float | None
    ended_at: float
    layers: tuple[LayerStop, ...]
    tools_started: int
    tools_finished: int
    tools_prevented: int
    input_tokens: int
    output_tokens: int
    estimated: bool

    @property
    def stopped_in(self) -> float | None:
        """Seconds from the Stop until the run and every child had ended."""
        return None if self.asked_at is None else self.ended_at - self.asked_at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the API's ``receipt``."""
        stopped_in = self.stopped_in
        return {
            "run_id": self.run_id,
            "status": self.status,
            "reason": None
            if self.reason is None
            else {"kind": self.reason.kind, "message": self.reason.message},
            "source": self.source,
            "started_at": self.started_at,
            "asked_at": self.asked_at,
            "ended_at": self.ended_at,
            "stopped_in_ms": None if stopped_in is None else round(stopped_in * 1e3, 3),
            "layers": [layer.to_dict() for layer in self.layers],
            "tools": {
                "started": self.tools_started,
                "finished": self.tools_finished,
                "prevented": self.tools_prevented,
            },
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "estimated": self.estimated,
            },
        }


Entry = tuple[float, Layer, str, str, int | None, int | None, bool, str]
"""A layer's end as recorded: ``time.monotonic()`` then :class:`LayerStop`'s fields
(kept as a plain tuple: a receipt nobody reads costs no objects)."""


class Recording:
    """What a run collects for its receipt (a :class:`~cancelkit.Run` is one).

    A run that records nothing allocates nothing: the first entry makes the list.
    """

    __slots__ = ("_entries", "_partial", "_tools_finished", "_tools_prevented", "_tools_started")

    def __init__(self) -> None:
        self._entries: list[Entry] | None = None
        self._tools_started = 0
        self._tools_finished = 0
        self._tools_prevented = 0
        self._partial: object = None

    def _record(self, entry: Entry) -> None:
        entries = self._entries
        if entries is None:
            entries = self._entries = []
        entries.append(entry)

    def _layer_stops(
        self,
        started_wall: float,
        started_mono: float,
        asked: float | None,
        last: Entry | None = None,
    ) -> tuple[LayerStop, ...]:
        """The entries (and ``last`` after them) as :class:`LayerStop` values, on
        the wall clock."""
        entries = self._entries or []
        if last is not None:
            entries = [*entries, last]
        return tuple(
            LayerStop(
                layer,
                name,
                outcome,
                started_wall + (mono - started_mono),
                None if asked is None else mono - asked,
                input_tokens,
                output_tokens,
                estimated,
                detail,
            )
            for (
                mono,
                layer,
                name,
                outcome,
                input_tokens,
                output_tokens,
                estimated,
                detail,
            ) in entries
        )


_current_recording: ContextVar[Recording | None] = ContextVar("cancelkit_current_run", default=None)


def current_recording() -> Recording | None:
    """The run this code works for (for a layer reporting its end), or ``None``."""
    return _current_recording.get()


def record(
    layer: Layer,
    name: str,
    outcome: str,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    estimated: bool = False,
    detail: str = "",
) -> None:
    """Report one layer's end to the run this code works for (nothing outside a run).

    Called by the layer itself, in the task or thread that saw it end.
    """
    recording = _current_recording.get()
    if recording is not None:
        recording._record(  # noqa: SLF001 - layers write, the run reads
            (time.monotonic(), layer, name, outcome, input_tokens, output_tokens, estimated, detail)
        )


def tool_started(name: str) -> None:
    """A tool call of the current run has begun."""
    recording = _current_recording.get()
    if recording is not None:
        recording._tools_started += 1  # noqa: SLF001


def tool_finished(name: str, outcome: str) -> None:
    """A tool call of the current run has ended: ``completed``, ``cancelled``, ``failed``."""
    recording = _current_recording.get()
    if recording is not None:
        recording._tools_finished += 1  # noqa: SLF001
        record("tool", name, outcome)


def keep_partial(value: object) -> None:
    """Keep ``value`` as what the current run hands back if it is stopped.

    Call it while the run works (the text so far) or while it unwinds from a Stop
    (a framework's partial state); the run's outcome has it as ``partial``, however
    the run ends. Outside a run it does nothing.
    """
    recording = _current_recording.get()
    if recording is not None:
        recording._partial = value  # noqa: SLF001


def tool_prevented(name: str, count: int = 1) -> None:
    """Tool calls the model asked for that never began, because the run was stopped."""
    recording = _current_recording.get()
    if recording is not None:
        recording._tools_prevented += count  # noqa: SLF001
        record("tool", name, "prevented", detail=f"{count} call(s) never started")

"""``CancelToken.cancel()`` called from a signal handler and from a finalizer.

Usage: ``python -m tests.scenarios.cancel_in_handlers signal|finalizer``. The main
thread registers callbacks and children on tokens in a tight loop (holding each
token's registry lock again and again) while a timer signal, or the garbage
collector running ``__del__``, cancels those very tokens on the same thread. Prints
``OK <cancels> <callbacks run>`` when every token was cancelled and every callback
ran exactly once; a deadlock shows as the process never printing.
"""

from __future__ import annotations

import functools
import gc
import signal
import sys

from cancelkit import CancelReason, CancelToken

ROUNDS = 20_000
REASON = CancelReason("shutdown", "from a handler")


class Box:
    token: CancelToken | None = None


box = Box()
calls: list[int] = []


def keep(held: object, _reason: CancelReason) -> object:
    return held


def record(index: int, _reason: CancelReason) -> None:
    calls.append(index)


def cancel_current(*_args: object) -> None:
    token = box.token
    if token is not None:
        token.cancel(REASON)


class Finalized:
    """An object whose finalizer cancels the current token."""

    def __del__(self) -> None:
        cancel_current()


def main(mode: str) -> None:
    if mode == "signal":
        signal.signal(signal.SIGALRM, cancel_current)
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    tokens: list[CancelToken] = []
    for index in range(ROUNDS):
        for _ in range(3):
            # A fresh token each time, so the cancel that interrupts the
            # registration below is the one that decides it.
            token = CancelToken()
            box.token = token
            tokens.append(token)
            if mode == "finalizer":
                # The callback holds the last reference to a Finalized: removing
                # it runs the finalizer inside the token's own bookkeeping.
                handle = token.on_cancel(functools.partial(keep, Finalized()))
                handle.remove()
            token.on_cancel(functools.partial(record, index))
            token.child()
    signal.setitimer(signal.ITIMER_REAL, 0)
    for token in tokens:
        token.cancel(REASON)  # those the handler never reached
    gc.collect()
    assert all(t.cancelled for t in tokens)
    assert len(calls) == 3 * ROUNDS, len(calls)
    assert sorted(calls) == sorted(list(range(ROUNDS)) * 3)
    print("OK", ROUNDS, len(calls), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

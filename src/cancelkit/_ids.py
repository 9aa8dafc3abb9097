"""Run ids: unguessable, and cheap enough to make one per run.

An id is 22 URL-safe characters, each 6 random bits (132 bits, as much as
``secrets.token_urlsafe(16)`` gives, from the same source, ``os.urandom``). But one
system call and one encoding per id cost more than the rest of starting a run, so
ids are cut from one random block, encoded once, that is refilled every
``_PER_BLOCK`` ids. Every character of every id comes from its own random bits:
knowing one id says nothing about the next.

Taking an id is one ``deque.popleft()``, atomic under the GIL: safe from any
thread without a lock. Two threads that find the queue empty at once both refill
it, which only wastes a block. A forked child forgets the parent's block, or the
two processes would hand out the same ids.
"""

from __future__ import annotations

import base64
import os
from collections import deque

__all__ = ("new_id",)

ID_CHARS = 22
"""Characters in an id: 132 random bits."""

_PER_BLOCK = 256
"""Ids cut from one random block."""

# 33 random bytes encode to 44 characters without padding: two ids.
_BLOCK_BYTES = ID_CHARS * _PER_BLOCK * 3 // 4

_ids: deque[str] = deque()


def _refill() -> None:
    text = base64.urlsafe_b64encode(os.urandom(_BLOCK_BYTES)).decode("ascii")
    _ids.extend([text[start : start + ID_CHARS] for start in range(0, len(text), ID_CHARS)])


def new_id() -> str:
    """A new unguessable id (22 URL-safe characters); safe from any thread."""
    while True:
        try:
            return _ids.popleft()
        except IndexError:
            _refill()


os.register_at_fork(after_in_child=_ids.clear)

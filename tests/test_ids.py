"""Run ids cut from one random block: unique and unguessable across refills,
threads and a fork."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from cancelkit import _ids

ID = re.compile(r"[A-Za-z0-9_-]{22}")


def test_ids_stay_unique_and_well_formed_across_refills() -> None:
    ids = [_ids.new_id() for _ in range(_ids._PER_BLOCK * 5 + 7)]
    assert len(set(ids)) == len(ids)
    assert all(ID.fullmatch(run_id) for run_id in ids)


def test_every_character_is_random_not_only_the_block() -> None:
    # Each position of an id takes many values over a few blocks: no fixed
    # padding, no shared prefix between the ids of one block.
    ids = [_ids.new_id() for _ in range(_ids._PER_BLOCK * 4)]
    for position in range(_ids.ID_CHARS):
        assert len({run_id[position] for run_id in ids}) > 40
    assert len({run_id[:4] for run_id in ids}) > len(ids) * 0.9


def test_ids_taken_from_many_threads_at_once_are_all_distinct() -> None:
    _ids._ids.clear()  # every thread meets an empty queue at once
    per_thread, taken = 3000, []
    start = threading.Barrier(8)

    def take() -> None:
        start.wait()
        taken.append([_ids.new_id() for _ in range(per_thread)])

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [run_id for ids in taken for run_id in ids]
    assert len(everything) == 8 * per_thread
    assert len(set(everything)) == len(everything)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_block() -> None:
    _ids.new_id()  # the parent holds a block now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, _ids.new_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert ID.fullmatch(child_id)
    assert child_id != _ids.new_id()

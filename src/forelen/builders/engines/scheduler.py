"""The `hf` engine's scheduling decisions, apart from its tensors: pure Python, testable without a
model (the runner, `engines/hf.py`, carries them out on the slot cache).

The engine's slots 0..n-1 hold the running rows, in that order; a step decodes all of them. What
is decided here:

- **admission:** which waiting request takes a free slot. `WaitQueue` pops the smallest key, ties
  (and FCFS, whose key is the arrival index) in arrival order. A build admits in plan order; a
  replay by its policy's key (`forelen.replay`).
- **compaction:** after rows end, `compact_moves` says which rows move into the holes so that the
  running rows are 0..n-1 again (the last row into the lowest hole: at most one copy per hole).
- **re-sorting:** `resort_order` says when the slots' length order has drifted far enough that
  permuting them pays for its copies (attention ranges, `slots.split_ranges`).
- **preemption:** `preemption_victim` picks the running row a waiting request displaces.
"""

from __future__ import annotations

import heapq
from typing import Any, Sequence

from forelen.builders.engines.slots import split_ranges

# Re-sort the slots by length when the attention ranges of their current order read this many
# times the keys of the sorted order: a sort copies each cache once, about one padded step.
RESORT_RATIO = 1.3


class WaitQueue:
    """Requests waiting for a slot: the smallest key first, ties in arrival order."""

    def __init__(self):
        self._heap: list[tuple[float, int, Any]] = []

    def push(self, key: float, order: int, item: Any) -> None:
        heapq.heappush(self._heap, (float(key), int(order), item))

    def pop(self) -> tuple[float, int, Any]:
        return heapq.heappop(self._heap)

    def first_key(self) -> float:
        return self._heap[0][0]

    def __len__(self) -> int:
        return len(self._heap)


def compact_moves(occupied: Sequence[bool]) -> tuple[list[tuple[int, int]], int]:
    """(moves, n): the (source, destination) slot moves, in order, that leave the occupied slots
    at 0..n-1, each moving the last occupied slot into the lowest hole."""
    rows = list(occupied)
    n = len(rows)
    moves = []
    while n and not rows[n - 1]:
        n -= 1
    for hole in range(n):
        if hole >= n:
            break
        if not rows[hole]:
            moves.append((n - 1, hole))
            rows[hole], rows[n - 1] = True, False
            n -= 1
            while n and not rows[n - 1]:
                n -= 1
    return moves, n


def resort_order(lengths: Sequence[int]) -> tuple[list[int] | None, list[tuple[int, int, int]]]:
    """(order, ranges) for a decode step over slots of these cache lengths (+1 for the token
    fed): the slots' permutation into length order when the current order's attention ranges
    cost more than RESORT_RATIO x the sorted order's, else None; and the ranges to attend with
    (of the order the step will run in)."""
    cost, ranges = split_ranges(list(lengths))
    ideal, sorted_ranges = split_ranges(sorted(lengths))
    if cost > RESORT_RATIO * ideal:
        return sorted(range(len(lengths)), key=lambda s: (lengths[s], s)), sorted_ranges
    return None, ranges


def preemption_victim(running_keys: Sequence[float], waiting_key: float) -> int | None:
    """The running slot a waiting request displaces: the one with the largest remaining key,
    when the waiting key is strictly smaller; else None."""
    if not running_keys:
        return None
    worst = max(range(len(running_keys)), key=lambda s: (running_keys[s], -s))
    return worst if waiting_key < running_keys[worst] else None

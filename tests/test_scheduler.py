"""The `hf` engine's scheduling decisions, without a model (`engines/scheduler.py`)."""

from __future__ import annotations

import random
import subprocess
import sys

from forelen.builders.engines.scheduler import (WaitQueue, compact_moves, preemption_victim,
                                                resort_order)


def test_the_scheduler_imports_no_tensor_library():
    code = ("import sys, forelen.builders.engines.scheduler; "
            "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-800:]


def test_the_wait_queue_pops_the_smallest_key_and_ties_in_arrival_order():
    q = WaitQueue()
    for order, key in enumerate([5.0, 1.0, 5.0, 0.5, 1.0]):
        q.push(key, order, f"r{order}")
    assert q.first_key() == 0.5
    assert [q.pop()[2] for _ in range(len(q))] == ["r3", "r1", "r4", "r0", "r2"]
    fifo = WaitQueue()  # a build: the key is the plan index
    for i in range(4):
        fifo.push(i, i, i)
    assert [fifo.pop()[2] for _ in range(4)] == [0, 1, 2, 3]


def _apply(occupied, moves):
    rows = [f"row{s}" if busy else None for s, busy in enumerate(occupied)]
    for src, dst in moves:
        assert rows[src] is not None and rows[dst] is None
        rows[dst], rows[src] = rows[src], None
    return rows


def test_compaction_leaves_the_running_rows_first_with_one_move_per_hole():
    assert compact_moves([True, False, True, False, True, True]) == ([(5, 1), (4, 3)], 4)
    assert compact_moves([False, False]) == ([], 0)
    rng = random.Random(0)
    for _ in range(200):
        occupied = [rng.random() < 0.5 for _ in range(rng.randint(0, 12))]
        moves, n = compact_moves(occupied)
        rows = _apply(occupied, moves)
        assert n == sum(occupied)
        assert all(r is not None for r in rows[:n]) and all(r is None for r in rows[n:])
        assert len(moves) == sum(1 for s in range(n) if not occupied[s])
        assert sorted(r for r in rows if r) == sorted(f"row{s}" for s, b in enumerate(occupied) if b)


def test_slots_are_resorted_only_when_their_order_costs_more_than_sorting():
    order, _ = resort_order([10, 20, 30, 40])
    assert order is None  # already in length order
    lengths = [900, 3, 950, 4, 980, 5, 990, 6] * 4
    order, ranges = resort_order(lengths)
    assert order is not None and sorted(order) == list(range(len(lengths)))
    assert [lengths[s] for s in order] == sorted(lengths)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(lengths)  # the ranges of the sorted order


def test_a_waiting_request_displaces_the_largest_remaining_key_only_when_strictly_smaller():
    assert preemption_victim([30.0, 80.0, 80.0, 10.0], 50.0) == 1  # the first of the largest
    assert preemption_victim([30.0, 80.0], 80.0) is None  # a tie never preempts
    assert preemption_victim([], 1.0) is None

"""The two strict priority levels (procpool.policy.queues.TaskQueues)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from procpool.policy.queues import TaskQueues


def drain_by_pop(queues: TaskQueues[int]) -> list[int]:
    out = []
    while queues:
        out.append(queues.pop())
    return out


def drain_by_line(queues: TaskQueues[int]) -> list[int]:
    """As the dispatcher takes a batch: pop the current line's head until it empties."""
    out = []
    line = queues.line()
    while True:
        if not line:
            line = queues.line()
            if not line:
                return out
        out.append(line.popleft())


def test_every_priority_item_comes_before_any_normal_one_fifo_within_each() -> None:
    queues: TaskQueues[int] = TaskQueues()
    for item, priority in [(1, False), (2, True), (3, False), (4, True)]:
        queues.push(item, priority)
    assert len(queues) == 4
    assert queues.peek() == 2
    assert drain_by_pop(queues) == [2, 4, 1, 3]
    assert not queues


def test_items_put_back_go_first_in_their_order() -> None:
    queues: TaskQueues[int] = TaskQueues()
    queues.push(9, priority=True)
    queues.push(5)
    queues.push_front([1, 2])  # a retry: ahead of every queued task
    queues.push_front([3, 4], priority=False)
    assert drain_by_pop(queues) == [1, 2, 9, 3, 4, 5]


def test_a_removed_item_is_gone_and_clear_returns_the_rest_in_order() -> None:
    queues: TaskQueues[int] = TaskQueues()
    for item in range(4):
        queues.push(item, priority=item % 2 == 1)
    assert queues.remove(2) and not queues.remove(7)
    assert queues.clear() == [1, 3, 0]
    assert not queues and len(queues) == 0


def test_the_line_of_empty_queues_is_empty() -> None:
    queues: TaskQueues[int] = TaskQueues()
    assert not queues.line()
    queues.push(1)
    assert list(queues.line()) == [1]


@given(st.lists(st.tuples(st.integers(), st.booleans()), max_size=40))
def test_draining_line_by_line_gives_what_pop_gives(pushes: list[tuple[int, bool]]) -> None:
    by_pop: TaskQueues[int] = TaskQueues()
    by_line: TaskQueues[int] = TaskQueues()
    for item, priority in pushes:
        by_pop.push(item, priority)
        by_line.push(item, priority)
    assert drain_by_line(by_line) == drain_by_pop(by_pop)

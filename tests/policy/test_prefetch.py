"""The prefetch depth follows the kind of task at hand (procpool.policy.prefetch)."""

from __future__ import annotations

from procpool.policy.prefetch import (
    HOLD_NEXT_BELOW_SECONDS,
    MAX_KINDS,
    PREFETCH_LIMIT,
    PREFETCH_SECONDS,
    TaskDurations,
)

TINY = PREFETCH_SECONDS / 20
SHORT = PREFETCH_SECONDS * 4  # not tiny, but short enough to hold the next one
SLOW = HOLD_NEXT_BELOW_SECONDS * 2


def test_a_kind_never_seen_goes_one_at_a_time() -> None:
    durations = TaskDurations()
    assert durations.depth("unseen") == 1
    assert durations.refill_below("unseen") == 1
    assert not durations.is_tiny("unseen")


def test_a_short_kind_holds_the_next_task_and_a_slow_one_does_not() -> None:
    durations = TaskDurations()
    durations.record("short", SHORT)
    durations.record("slow", SLOW)
    assert (durations.depth("short"), durations.refill_below("short")) == (2, 2)
    assert (durations.depth("slow"), durations.refill_below("slow")) == (1, 1)


def test_tiny_kinds_refill_at_half_their_depth() -> None:
    durations = TaskDurations()
    durations.record("tiny", TINY)
    assert durations.refill_below("tiny") == durations.depth("tiny") // 2


def test_tiny_tasks_batch_to_about_prefetch_seconds_of_work_and_never_past_the_limit() -> None:
    durations = TaskDurations()
    durations.record("tiny", TINY)
    assert durations.is_tiny("tiny")
    assert durations.depth("tiny") == 21  # the running one plus ~1 ms of work
    durations.record("instant", 0.0)
    assert durations.depth("instant") == PREFETCH_LIMIT
    durations.record("fast", PREFETCH_SECONDS / 1000)
    assert durations.depth("fast") == PREFETCH_LIMIT


def test_one_slow_run_drops_the_depth_to_one_at_once() -> None:
    durations = TaskDurations()
    for _ in range(100):
        durations.record("kind", TINY)
    durations.record("kind", SHORT)
    assert durations.depth("kind") == 2
    assert not durations.is_tiny("kind")
    durations.record("kind", SLOW)
    assert durations.depth("kind") == 1


def test_a_slow_kind_batches_again_only_after_several_tiny_runs() -> None:
    durations = TaskDurations()
    durations.record("kind", SHORT)
    depths = []
    for _ in range(10):
        durations.record("kind", TINY)
        depths.append(durations.depth("kind"))
    assert depths[:3] == [2, 2, 2]  # one tiny run does not undo a slower one
    assert depths[-1] > 1
    assert depths == sorted(depths)


def test_kinds_are_independent() -> None:
    durations = TaskDurations()
    durations.record("tiny", TINY)
    durations.record("slow", SLOW)
    assert durations.depth("tiny") > 1
    assert durations.depth("slow") == 1


def test_the_table_is_bounded() -> None:
    durations = TaskDurations()
    for i in range(MAX_KINDS * 3):
        durations.record(i, TINY)
        assert len(durations._seconds) <= MAX_KINDS
    assert durations.estimate(MAX_KINDS * 3 - 1) == TINY

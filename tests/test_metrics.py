"""Metrics: totals, rates and percentiles of a real pool, a user collector, bounded memory."""

from __future__ import annotations

import threading
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest

import procpool
from procpool import Config, MaxRetriesExceededError, Metrics, TaskManager, TaskStamps
from procpool.metrics import DefaultCollector, MetricsCollector
from tests import burst_tasks, tasks


def plain_config(**overrides: Any) -> Config[Any]:
    options: dict[str, Any] = {
        "on_create": tasks.make_plain,
        "worker_count": 2,
        "resource_pool_size": 0,
        "burst_interval": None,
    }
    options.update(overrides)
    return Config(**options)


def test_totals_rates_and_success_after_a_mix_of_ok_and_failing_tasks() -> None:
    with TaskManager(plain_config()) as manager:
        before = manager.metrics()
        ok = [manager.queue_task(burst_tasks.nap, 0.02, i) for i in range(6)]
        bad = [manager.queue_task(burst_tasks.fail_after, 0.02) for _ in range(4)]
        assert [f.result() for f in ok] == list(range(6))
        for future in bad:
            with pytest.raises(ValueError, match="failed after"):
                future.result()
        after = manager.metrics()
    assert isinstance(after, Metrics)
    assert (before.total_tasks_completed, before.total_tasks_failed) == (0, 0)
    assert (before.success_rate, before.failure_rate) == (0.0, 0.0)
    assert before.task_completion_rate == 0.0
    assert after.total_tasks_completed == 6
    assert after.total_tasks_failed == 4
    assert after.total_tasks_retried == 0
    assert after.success_rate == pytest.approx(0.6)
    assert after.failure_rate == pytest.approx(0.4)
    # All 10 arrived and ended well within the 2 s window: both rates count them.
    assert after.task_arrival_rate > 0
    assert after.task_completion_rate > 0
    assert 0.02 <= after.min_execution_time <= after.average_execution_time
    assert after.average_execution_time <= after.max_execution_time
    assert after.average_wait_time >= 0


def test_failure_rate_is_right_when_nothing_has_succeeded() -> None:
    with TaskManager(plain_config()) as manager:
        for future in [manager.queue_task(tasks.boom, "no") for _ in range(3)]:
            with pytest.raises(tasks.BoomError):
                future.result()
        metrics = manager.metrics()
    assert (metrics.total_tasks_completed, metrics.total_tasks_failed) == (0, 3)
    assert (metrics.success_rate, metrics.failure_rate) == (0.0, 1.0)


def test_percentiles_of_known_task_times() -> None:
    # 19 short tasks and one long one: p95 is a short one (rank 19 of 20), p99 the long one.
    with TaskManager(plain_config(worker_count=1)) as manager:
        futures = [manager.queue_task(burst_tasks.nap, 0.01, i) for i in range(19)]
        futures.append(manager.queue_task(burst_tasks.nap, 0.3, 19))
        assert [f.result() for f in futures] == list(range(20))
        metrics = manager.metrics()
    assert metrics.min_execution_time >= 0.01
    assert metrics.min_execution_time <= metrics.p95_execution_time < 0.15
    assert 0.3 <= metrics.p99_execution_time <= metrics.max_execution_time
    assert metrics.max_execution_time < 2.0
    # One worker ran them in turn: the last one waited for the 19 before it.
    assert metrics.average_wait_time > 0.01


def test_retries_are_counted_once_per_retry() -> None:
    config = plain_config(
        worker_count=1, max_retries=2, check_health=burst_tasks.never_healthy
    )
    with TaskManager(config) as manager:
        with pytest.raises(MaxRetriesExceededError):
            manager.queue_task(tasks.boom).result()
        metrics = manager.metrics()
    assert metrics.total_tasks_retried == 2
    assert (metrics.total_tasks_completed, metrics.total_tasks_failed) == (0, 1)


class CountingCollector:
    """A user collector that only counts, and checks the stamps it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals = 0
        self.completions = 0
        self.failures = 0
        self.retries = 0
        self.bad_stamps: list[TaskStamps] = []

    def record_arrival(self) -> None:
        with self.lock:
            self.arrivals += 1

    def record_completion(self, stamps: TaskStamps) -> None:
        self._check(stamps)
        with self.lock:
            self.completions += 1

    def record_failure(self, stamps: TaskStamps) -> None:
        self._check(stamps)
        with self.lock:
            self.failures += 1

    def record_retry(self) -> None:
        with self.lock:
            self.retries += 1

    def _check(self, stamps: TaskStamps) -> None:
        if not stamps.queued <= stamps.started <= stamps.finished:
            self.bad_stamps.append(stamps)

    def metrics(self) -> Metrics:
        with self.lock:
            ended = self.completions + self.failures
            return Metrics(
                task_arrival_rate=float(self.arrivals),
                task_completion_rate=0.0,
                average_execution_time=0.0,
                min_execution_time=0.0,
                max_execution_time=0.0,
                p95_execution_time=0.0,
                p99_execution_time=0.0,
                average_wait_time=0.0,
                total_tasks_completed=self.completions,
                total_tasks_failed=self.failures,
                total_tasks_retried=self.retries,
                success_rate=self.completions / ended if ended else 0.0,
                failure_rate=self.failures / ended if ended else 0.0,
            )


def test_a_user_collector_is_called_with_the_right_counts() -> None:
    collector = CountingCollector()
    assert isinstance(collector, MetricsCollector)
    config = plain_config(
        collector=collector, max_retries=1, check_health=burst_tasks.never_healthy
    )
    with TaskManager(config) as manager:
        assert list(manager.map(tasks.double, range(5))) == [0, 2, 4, 6, 8]
        assert manager.queue_task(tasks.add, 1, 2).result() == 3
        with pytest.raises(MaxRetriesExceededError):
            manager.queue_task(tasks.boom).result()  # unhealthy: 1 retry, then fails
        with pytest.raises(tasks.BoomError):
            manager.queue_task_once(tasks.boom).result()  # once: never retried
        metrics = manager.metrics()
    assert (collector.arrivals, collector.completions) == (8, 6)
    assert (collector.failures, collector.retries) == (2, 1)
    assert collector.bad_stamps == []
    # manager.metrics() is the user collector's answer.
    assert metrics.task_arrival_rate == 8.0
    assert (metrics.total_tasks_completed, metrics.total_tasks_failed) == (6, 2)
    assert metrics.total_tasks_retried == 1
    assert metrics.success_rate == pytest.approx(0.75)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_default_collector_rates_follow_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(procpool.metrics, "monotonic", clock)
    collector = DefaultCollector(window=2.0)
    for _ in range(50):  # 10 arrivals and 5 completions per second for 5 s
        clock.now += 0.1
        collector.record_arrival()
        if round(clock.now * 10) % 2 == 0:
            collector.record_completion(TaskStamps(clock.now - 0.3, clock.now - 0.2, clock.now))
    metrics = collector.metrics()
    assert metrics.task_arrival_rate == pytest.approx(10.0, rel=0.1)
    assert metrics.task_completion_rate == pytest.approx(5.0, rel=0.1)
    assert metrics.average_execution_time == pytest.approx(0.2)
    assert metrics.average_wait_time == pytest.approx(0.1)
    assert metrics.total_tasks_completed == 25
    clock.now += 2.5  # a quiet window: a rate is what happens now, not a lifetime average
    metrics = collector.metrics()
    assert (metrics.task_arrival_rate, metrics.task_completion_rate) == (0.0, 0.0)
    assert metrics.total_tasks_completed == 25


def test_default_collector_percentiles_of_known_durations() -> None:
    collector = DefaultCollector()
    for ms in range(1, 101):  # 1 ms .. 100 ms
        collector.record_completion(TaskStamps(0.0, 1.0, 1.0 + ms / 1000))
    metrics = collector.metrics()
    assert metrics.min_execution_time == pytest.approx(0.001)
    assert metrics.max_execution_time == pytest.approx(0.100)
    assert metrics.average_execution_time == pytest.approx(0.0505)
    assert metrics.p95_execution_time == pytest.approx(0.095, rel=0.03)
    assert metrics.p99_execution_time == pytest.approx(0.099, rel=0.03)
    assert metrics.average_wait_time == pytest.approx(1.0)


def test_default_collector_records_a_batch_of_ends_as_one_by_one() -> None:
    ends = [(TaskStamps(0.0, 1.0, 1.0 + i / 100), i % 3 == 0) for i in range(30)]
    ends.append((TaskStamps(2.0, 3.0, 3.0), False))  # no measurable run: counted, not timed
    batch, single = DefaultCollector(), DefaultCollector()
    batch.record_ends(ends)
    for stamps, failed in ends:
        (single.record_failure if failed else single.record_completion)(stamps)
    untimed = {"task_arrival_rate": 0.0, "task_completion_rate": 0.0}  # read at other instants
    assert replace(batch.metrics(), **untimed) == replace(single.metrics(), **untimed)
    assert batch.metrics().task_completion_rate > 0
    assert (batch.metrics().total_tasks_completed, batch.metrics().total_tasks_failed) == (21, 10)


def test_default_collector_memory_is_bounded() -> None:
    collector = DefaultCollector()

    def feed(count: int, offset: int) -> None:
        for i in range(offset, offset + count):
            collector.record_arrival()
            seconds = (i % 997 + 1) * 1e-4  # 0.1 ms .. 100 ms
            stamps = TaskStamps(0.0, 1.0, 1.0 + seconds)
            if i % 10:
                collector.record_completion(stamps)
            else:
                collector.record_failure(stamps)
            if i % 100 == 0:
                collector.record_retry()

    buckets = (collector._execution.bucket_count, len(collector._arrivals._counts))
    feed(1_000, 0)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        feed(99_000, 1_000)
        collector.metrics()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 1e5 records later: the same buckets, and no memory kept per record.
    assert (collector._execution.bucket_count, len(collector._arrivals._counts)) == buckets
    assert after - before < 20_000  # bytes; a list of durations would need > 800,000
    metrics = collector.metrics()
    assert metrics.total_tasks_completed == 90_000
    assert metrics.total_tasks_failed == 10_000
    assert metrics.total_tasks_retried == 1_000
    assert metrics.failure_rate == pytest.approx(0.1)


class _CountingLock:
    """A stand-in for the queue lock that counts how often it is taken."""

    def __init__(self) -> None:
        self.taken = 0

    def __enter__(self) -> None:
        self.taken += 1

    def __exit__(self, *exc: object) -> None:
        pass


def test_arrivals_counted_under_the_queue_lock_reach_the_collector_once() -> None:
    from procpool.supervisor.state import Records

    records = Records(plain_config())
    lock = _CountingLock()
    records.flush_arrivals(lock)
    assert (lock.taken, records.arrived_total) == (0, 0)  # none counted: no lock taken
    records.pending_arrivals = 3
    records.flush_arrivals(lock)
    records.flush_arrivals(lock)
    assert (lock.taken, records.arrived_total, records.pending_arrivals) == (1, 3, 0)
    assert records.metrics._arrivals.total == 3

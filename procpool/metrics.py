"""Metrics: what the pool did, over a sliding window and over its life.

The built-in :class:`DefaultCollector` keeps O(1) memory per task: rates come
from a ring of time buckets and percentiles from a log-bucketed histogram,
never from a list of every duration. A user may plug in any object with the
same five methods (:class:`MetricsCollector`) through ``Config.collector``.

Thread safety: the collector is called from the supervisor thread (results)
and from caller threads (arrivals), so the default one holds a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Protocol, runtime_checkable

from procpool.policy.rates import DurationHistogram, RateWindow


@dataclass(frozen=True)
class TaskStamps:
    """When a task was queued, started and finished (``time.monotonic()`` seconds).

    ``started`` and ``finished`` are read in the worker: on the platforms
    procpool runs on, the monotonic clock is shared by all processes.
    """

    queued: float
    started: float
    finished: float

    @property
    def wait_time(self) -> float:
        return max(0.0, self.started - self.queued)

    @property
    def execution_time(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass(frozen=True)
class Metrics:
    """A frozen view of the pool's performance. Times in seconds, rates in tasks/s."""

    task_arrival_rate: float
    task_completion_rate: float
    average_execution_time: float
    min_execution_time: float
    max_execution_time: float
    p95_execution_time: float
    p99_execution_time: float
    average_wait_time: float
    total_tasks_completed: int
    total_tasks_failed: int
    total_tasks_retried: int
    success_rate: float
    failure_rate: float
    #: Recent tasks' CPU seconds per wall second in their workers: ~1 for CPU-bound work,
    #: ~0 for tasks that sleep or wait on I/O, None before any task ended. Measured by
    #: procpool itself (a user collector cannot see it); bursting is capped by it.
    cpu_share: float | None = None


@runtime_checkable
class MetricsCollector(Protocol):
    """What ``Config.collector`` must provide (the Go original's MetricsCollector)."""

    def record_arrival(self) -> None: ...
    def record_completion(self, stamps: TaskStamps) -> None: ...
    def record_failure(self, stamps: TaskStamps) -> None: ...
    def record_retry(self) -> None: ...
    def metrics(self) -> Metrics: ...


class DefaultCollector:
    """Windowed rates and bounded histograms behind one lock.

    ``window`` (seconds, default 2.0) is how far back the rates look: shorter
    reacts faster to load changes, longer is steadier. If in doubt, keep 2.0.
    """

    def __init__(self, window: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._arrivals = RateWindow(window)
        self._endings = RateWindow(window)  # completions and failures: work that left
        self._execution = DurationHistogram()
        self._wait_total = 0.0
        self._waits = 0
        self._completed = 0
        self._failed = 0
        self._retried = 0

    def record_arrival(self) -> None:
        self.record_arrivals(1)

    def record_arrivals(self, count: int) -> None:
        """Record ``count`` arrivals at once (the supervisor hands them over in bulk)."""
        now = monotonic()
        with self._lock:
            self._arrivals.record(now, count)

    def record_completion(self, stamps: TaskStamps) -> None:
        self.record_ends(((stamps, False),))

    def record_failure(self, stamps: TaskStamps) -> None:
        self.record_ends(((stamps, True),))

    def record_ends(self, ends: Iterable[tuple[TaskStamps, bool]]) -> None:
        """Record ended tasks, ``(stamps, failed)`` each, in one step."""
        self.record_runs([(s.finished - s.started, s.wait_time, failed) for s, failed in ends])

    def record_runs(self, runs: Sequence[tuple[float, float, bool]]) -> None:
        """Record ended tasks, ``(execution seconds, wait seconds, failed)`` each, in
        one step: the supervisor hands over a worker's batch of results at once. A
        task with no measurable run (execution 0 or less) is counted, not timed."""
        if not runs:
            return
        now = monotonic()
        timed = [run for run in runs if run[0] > 0]
        failed = sum(1 for run in runs if run[2])
        with self._lock:
            self._failed += failed
            self._completed += len(runs) - failed
            self._execution.record_all([run[0] for run in timed])
            wait_total = self._wait_total
            for run in timed:
                wait_total += run[1]
            self._wait_total = wait_total
            self._waits += len(timed)
            self._endings.record(now, len(runs))

    def record_retry(self) -> None:
        with self._lock:
            self._retried += 1

    def recent_mean_execution(self) -> float | None:
        """Recent mean execution time, or None before the first task ended."""
        with self._lock:
            return self._execution.recent_mean if self._execution.count else None

    def metrics(self) -> Metrics:
        now = monotonic()
        with self._lock:
            hist = self._execution
            ended = self._completed + self._failed
            return Metrics(
                task_arrival_rate=self._arrivals.rate(now),
                task_completion_rate=self._endings.rate(now),
                average_execution_time=hist.mean,
                min_execution_time=hist.min,
                max_execution_time=hist.max,
                p95_execution_time=hist.percentile(95),
                p99_execution_time=hist.percentile(99),
                average_wait_time=self._wait_total / self._waits if self._waits else 0.0,
                total_tasks_completed=self._completed,
                total_tasks_failed=self._failed,
                total_tasks_retried=self._retried,
                success_rate=self._completed / ended if ended else 0.0,
                failure_rate=self._failed / ended if ended else 0.0,
            )

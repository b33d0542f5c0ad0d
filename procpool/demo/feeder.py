"""The load generator: one thread that submits tasks along a rate pattern.

It integrates the pattern's rate over time and submits a task each time the
total reaches one more, so the arrivals follow the curve whatever the tick.
Every random choice (task length, failure, crash, priority) comes from one
seeded generator. Outcomes are counted in the futures' callbacks.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from time import monotonic
from typing import Any

from procpool.demo import workload
from procpool.demo.patterns import RatePattern
from procpool.errors import ShutdownError, WorkerCrashedError
from procpool.manager import TaskManager

#: Seconds between two looks at the clock; arrivals due meanwhile go together.
STEP_SECONDS = 0.005


@dataclass(frozen=True)
class Load:
    """What to submit: the pattern, its peak, and what each task does."""

    pattern: RatePattern
    duration: float  # seconds
    peak_rate: float  # tasks/s
    task_seconds: float  # mean CPU seconds per task
    fail_rate: float = 0.0  # share of tasks that raise
    crash_rate: float = 0.0  # share of tasks that end their worker
    priority_share: float = 0.0  # share of tasks queued with priority
    seed: int | None = None

    def rate_at(self, t: float) -> float:
        return self.pattern(min(t, self.duration), self.duration, self.peak_rate)


@dataclass(frozen=True)
class Counts:
    submitted: int = 0
    completed: int = 0
    failed: int = 0  # raised an exception (a simulated failure or anything else)
    crashed: int = 0  # their worker died under them
    cancelled: int = 0  # still queued when the run ended


class Feeder:
    """Submits :class:`Load` to a manager from a thread of its own."""

    def __init__(self, manager: TaskManager[Any], load: Load) -> None:
        self._manager = manager
        self._load = load
        self._rng = random.Random(load.seed)
        self._lock = threading.Lock()
        self._counts = {name: 0 for name in Counts.__dataclass_fields__}
        self._pending: set[Future[Any]] = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procpool-demo-feeder",
                                        daemon=True)
        self._started_at = monotonic()

    def start(self, started_at: float) -> None:
        """Start submitting; ``started_at`` (monotonic) is time 0 of the pattern."""
        self._started_at = started_at
        self._thread.start()

    def stop(self) -> None:
        """Stop submitting and wait for the thread."""
        self._halt.set()
        if self._thread.ident is not None:
            self._thread.join()

    def cancel_pending(self) -> None:
        """Cancel every task still queued (running ones finish)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    def counts(self) -> Counts:
        with self._lock:
            return Counts(**self._counts)

    def _run(self) -> None:
        load = self._load
        due = 0.0
        last = self._started_at
        while not self._halt.is_set():
            now = monotonic()
            if now - self._started_at >= load.duration:
                return
            due += load.rate_at(now - self._started_at) * (now - last)
            last = now
            while due >= 1.0:
                due -= 1.0
                try:
                    self._submit_one()
                except ShutdownError:
                    return
            self._halt.wait(STEP_SECONDS)

    def _submit_one(self) -> None:
        load, rng = self._load, self._rng
        cpu_seconds = load.task_seconds * rng.uniform(0.5, 1.5)
        draw = rng.random()
        if draw < load.crash_rate:
            outcome = workload.CRASH
        elif draw < load.crash_rate + load.fail_rate:
            outcome = workload.FAIL
        else:
            outcome = workload.OK
        priority = rng.random() < load.priority_share
        future = self._manager.submit(
            workload.crunch, (cpu_seconds, outcome, rng.randrange(1 << 30)), priority=priority
        )
        with self._lock:
            self._counts["submitted"] += 1
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        """Runs on the supervisor thread (or here, if already done): count and forget."""
        if future.cancelled():
            kind = "cancelled"
        else:
            error = future.exception()
            if error is None:
                kind = "completed"
            elif isinstance(error, WorkerCrashedError):
                kind = "crashed"
            elif isinstance(error, (CancelledError, ShutdownError)):
                kind = "cancelled"
            else:
                kind = "failed"
        with self._lock:
            self._counts[kind] += 1
            self._pending.discard(future)

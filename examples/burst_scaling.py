"""Bursting: 20 tasks queued at once on 2 base workers; watch burst workers come and go.

Every 250 ms it prints the pool's stats: burst workers start within a tick or two
of the flood, the queue drains, and after ``burst_cooldown`` seconds without a
backlog the idle burst workers leave (each runs on_destroy), back to the 2 base
workers. Then a graceful stop.

Run: python examples/burst_scaling.py
"""

from __future__ import annotations

import random
import time
from time import monotonic

import procpool


class HeavyComputeResource:
    """Stands in for something slow to build: a model, a solver licence, a big table."""

    def __init__(self) -> None:
        self.id = random.randrange(1000)


def create_compute_resource() -> HeavyComputeResource:
    return HeavyComputeResource()


def destroy_compute_resource(resource: HeavyComputeResource) -> None:
    pass  # close files, release the licence, ...


def compute(resource: HeavyComputeResource, task_id: int, seconds: float) -> str:
    time.sleep(seconds)  # the work: 100-400 ms
    return f"Task {task_id} completed"


def print_stats(manager: procpool.TaskManager[HeavyComputeResource]) -> int:
    stats = manager.stats()
    metrics = manager.metrics()
    print(
        f"Stats: Active={stats.active_workers} (Base={stats.base_workers}, "
        f"Burst={stats.burst_workers}), Queued={stats.queued_tasks + stats.priority_tasks}, "
        f"ArrivalRate={metrics.task_arrival_rate:.2f}, "
        f"CompletionRate={metrics.task_completion_rate:.2f}",
        flush=True,
    )
    return stats.burst_workers


if __name__ == "__main__":
    config = procpool.Config(
        on_create=create_compute_resource,
        on_destroy=destroy_compute_resource,
        worker_count=2,  # start with 2 base workers
        max_worker_count=8,  # base + burst workers, at most
        burst_interval=0.2,  # a burst decision every 200 ms
        burst_cooldown=1.0,  # idle burst workers leave after 1 s without a backlog (default)
    )
    manager = procpool.TaskManager(config)
    futures = [manager.queue_task(compute, i, random.uniform(0.1, 0.4)) for i in range(20)]

    print("Monitoring stats (watch for Burst)...")
    deadline = monotonic() + 8.0  # enough to scale up, drain, cool down and scale down
    peak = 0
    while monotonic() < deadline:
        burst = print_stats(manager)
        peak = max(peak, burst)
        if peak and burst == 0 and all(f.done() for f in futures):
            break  # back to the base workers: nothing more to watch
        time.sleep(0.25)

    print(f"{sum(f.result().endswith('completed') for f in futures)} tasks completed; "
          f"at most {peak} burst workers")
    print("Initiating graceful shutdown...")
    manager.stop()
    print("Stopped.")

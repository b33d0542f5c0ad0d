"""Strict priorities: while any priority task waits, no normal task starts.

One worker is kept busy while normal and priority tasks queue up; when it is
free, every priority task runs first, each level in arrival order.

Run: python examples/priorities.py
"""

from __future__ import annotations

import time

import procpool


def make_log() -> list[str]:
    return []


def hold(log: list[str], seconds: float) -> str:
    time.sleep(seconds)
    return "held"


def note(log: list[str], name: str) -> str:
    log.append(name)
    return f"{len(log)}. {name}"


if __name__ == "__main__":
    config = procpool.Config(on_create=make_log, worker_count=1, resource_pool_size=0)
    with procpool.TaskManager(config) as manager:
        busy = manager.queue_task(hold, 0.5)
        futures = [manager.queue_task(note, f"normal-{i}") for i in range(3)]
        futures += [manager.queue_task_with_priority(note, f"urgent-{i}") for i in range(3)]
        print(f"queued: {manager.stats().queued_tasks} normal,"
              f" {manager.stats().priority_tasks} priority")
        busy.result()
        for line in sorted(f.result() for f in futures):
            print(line)

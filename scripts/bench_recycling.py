"""What recycling costs: ``max_memory_per_worker`` per task, ``max_tasks_per_worker`` per recycle.

* The memory limit reads the worker's RSS (psutil) after every task: run the
  same tiny tasks with a limit that is never reached and without one; the
  difference per task is the price of the check.
* The task limit makes the worker leave (``on_destroy``) and a new one start
  (process start + ``on_create``): run tiny tasks with and without a limit;
  the extra wall time divided by the number of recycles is the price of one.

Each figure is the median of ``--runs`` runs. Usage::

    python scripts/bench_recycling.py [--runs 5] [--tasks 20000] [--start-method forkserver]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import procpool

EVERY = 1000  # max_tasks_per_worker in the recycling runs


def make_resource() -> dict[str, Any]:
    return {}


def tiny(resource: Any, x: int) -> int:
    return x + 1


def timed_run(tasks: int, start_method: str | None, **limits: Any) -> float:
    config = procpool.Config(on_create=make_resource, worker_count=2, resource_pool_size=0,
                             start_method=start_method, **limits)
    with procpool.TaskManager(config) as manager:
        list(manager.map(tiny, range(500)))  # warm up: the pool learns the tasks are tiny
        started = time.perf_counter()
        futures = [manager.queue_task(tiny, i) for i in range(tasks)]
        assert [f.result() for f in futures] == [i + 1 for i in range(tasks)]
        return time.perf_counter() - started


def median_run(runs: int, tasks: int, start_method: str | None, **limits: Any) -> float:
    return statistics.median(timed_run(tasks, start_method, **limits) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--start-method", default=None)
    args = parser.parse_args()
    n = args.tasks
    plain = median_run(args.runs, n, args.start_method)
    memory = median_run(args.runs, n, args.start_method, max_memory_per_worker=1 << 40)
    recycled = median_run(args.runs, n, args.start_method, max_tasks_per_worker=EVERY)
    recycles = n // EVERY
    method = args.start_method or procpool.config.default_start_method()
    print(f"{n} tiny tasks on 2 workers, median of {args.runs} runs, start method {method},"
          f" Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"no limits:                       {plain * 1000:8.1f} ms"
          f"  ({plain / n * 1e6:.1f} us/task)")
    print(f"max_memory_per_worker (unmet):   {memory * 1000:8.1f} ms"
          f"  (+{(memory - plain) / n * 1e6:.1f} us/task for the RSS check)")
    print(f"max_tasks_per_worker={EVERY}:      {recycled * 1000:8.1f} ms"
          f"  (+{(recycled - plain) / recycles * 1000:.1f} ms per recycle, {recycles} recycles)")


if __name__ == "__main__":
    main()

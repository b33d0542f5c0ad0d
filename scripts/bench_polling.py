"""What the polling windows cost and buy (``procpool.policy.spin``).

* Round trips: ``--round-trips`` sequential no-op tasks (submit one, wait for
  it): p50 and p99, and the CPU the caller's process and the workers spend per
  round trip.
* Steady arrivals: a no-op task every 1/rate seconds for ``--seconds``, at each
  rate of ``--rates``: the workers' CPU, in % of one CPU. A worker fed often
  enough polls between tasks instead of sleeping; this is what that costs.

Each figure is the median of ``--runs`` runs, each in a fresh pool. Usage::

    python scripts/bench_polling.py [--runs 3] [--rates 200,1000,2000,5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import procpool


def make_resource() -> None:
    return None


def noop(resource: Any, x: int) -> int:
    return x


class Pool:
    """A 2-worker pool, and the CPU seconds its caller's process and workers used."""

    def __init__(self, start_method: str | None) -> None:
        config = procpool.Config(on_create=make_resource, worker_count=2, resource_pool_size=0,
                                 start_method=start_method)
        self.manager = procpool.TaskManager(config)
        for i in range(300):  # the pool learns the task is tiny
            self.manager.queue_task(noop, i).result()
        self.workers = [psutil.Process(pid) for pid in self.manager.worker_pids()]

    def cpu(self) -> tuple[float, float]:
        own = os.times()
        workers = 0.0
        for worker in self.workers:
            times = worker.cpu_times()
            workers += times.user + times.system
        return own.user + own.system, workers

    def close(self) -> None:
        self.manager.stop()


def round_trips(count: int, start_method: str | None) -> dict[str, float]:
    pool = Pool(start_method)
    samples = []
    before = pool.cpu()
    for i in range(count):
        started = time.perf_counter()
        pool.manager.queue_task(noop, i).result()
        samples.append(time.perf_counter() - started)
    after = pool.cpu()
    pool.close()
    samples.sort()
    return {"p50_us": samples[len(samples) // 2] * 1e6,
            "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
            "caller_cpu_us": (after[0] - before[0]) / count * 1e6,
            "workers_cpu_us": (after[1] - before[1]) / count * 1e6}


def steady(rate: float, seconds: float, start_method: str | None) -> float:
    """The workers' CPU, in % of one CPU, while a task arrives every 1/rate seconds."""
    pool = Pool(start_method)
    futures: list[procpool.TaskFuture[int]] = []
    before = pool.cpu()
    started = due = time.perf_counter()
    while due - started < seconds:
        futures.append(pool.manager.queue_task(noop, len(futures)))
        due += 1 / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    assert [f.result() for f in futures] == list(range(len(futures)))
    wall = time.perf_counter() - started
    after = pool.cpu()
    pool.close()
    return (after[1] - before[1]) / wall * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=3000)
    parser.add_argument("--rates", default="200,1000,2000,5000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--start-method", default=None)
    args = parser.parse_args()
    runs = [round_trips(args.round_trips, args.start_method) for _ in range(args.runs)]
    print(f"procpool {procpool.__version__}, 2 workers, medians of {args.runs} runs\n")
    print("| round trip p50 µs | p99 µs | caller's process CPU per round trip µs |"
          " workers' CPU per round trip µs |")
    print("|---:|---:|---:|---:|")
    print("| " + " | ".join(f"{statistics.median(r[key] for r in runs):.1f}" for key in
                            ("p50_us", "p99_us", "caller_cpu_us", "workers_cpu_us")) + " |\n")
    print("| tasks/s, one every 1/rate s | workers' CPU, % of one CPU |")
    print("|---:|---:|")
    for rate in (float(r) for r in args.rates.split(",")):
        cpu = statistics.median(steady(rate, args.seconds, args.start_method)
                                for _ in range(args.runs))
        print(f"| {rate:,.0f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()

"""Worker start-up latency per start method.

For each start method, in a fresh interpreter each repetition:
  * cold: ``TaskManager(...)`` until both workers are ready (includes starting
    the forkserver process, for that method);
  * warm: a second manager in the same interpreter;
  * per worker: spawn request -> worker ready (``on_create`` is trivial);
  * replacement: per worker, for a worker started in a running pool (here a
    recycle, ``max_tasks_per_worker=1``), as burst workers and replacements
    of crashed ones are: for ``forkserver`` the pool's fork server is up by
    then, while the first workers of a pool wait for it to start.
Reports medians over the repetitions, in milliseconds.

    python scripts/bench_startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import procpool  # at the top, as in a user's script: the forkserver preloads __main__

METHODS = ("fork", "forkserver", "spawn")
#: Recycles timed per repetition for the "replacement" column; more steadies its median.
REPLACEMENTS = 5


def _resource() -> None:
    return None


def _ping(resource: None) -> int:
    return 1


def measure(method: str) -> dict[str, float]:
    config = procpool.Config(on_create=_resource, worker_count=2, resource_pool_size=0,
                             start_method=method)
    out = {}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        manager = procpool.TaskManager(config)
        out[f"{label}_ms"] = (time.perf_counter() - start) * 1e3
        handles = manager._supervisor.worker_handles()
        out[f"{label}_worker_ms"] = statistics.median(
            (h.ready_at or 0) * 1e3 - h.created_at * 1e3 for h in handles
        )
        manager.queue_task(_ping).result()
        manager.stop()
    out["replacement_worker_ms"] = statistics.median(_replacement_ms(method))
    return out


def _replacement_ms(method: str) -> list[float]:
    """Start -> ready of workers that replace a recycled one, in a running pool."""
    config = procpool.Config(on_create=_resource, worker_count=1, resource_pool_size=0,
                             start_method=method, max_tasks_per_worker=1)
    times = []
    with procpool.TaskManager(config) as manager:
        last = max(h.id for h in manager._supervisor.worker_handles())
        for _ in range(REPLACEMENTS):
            manager.queue_task(_ping).result()  # the worker leaves after it: a new one starts
            while True:
                fresh = [h for h in manager._supervisor.worker_handles()
                         if h.id > last and h.ready_at is not None]
                if fresh:
                    break
                time.sleep(0.0005)
            last = fresh[0].id
            times.append(((fresh[0].ready_at or 0) - fresh[0].created_at) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    print(f"Medians of {args.reps} runs, 2 workers.\n")
    print("| start method | cold: constructor ms | per worker ms | warm: constructor ms |"
          " per worker ms | replacement: per worker ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in METHODS:
        runs = []
        for _ in range(args.reps):
            done = subprocess.run([sys.executable, __file__, "--one", method],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"| {method} | {med['cold_ms']:.1f} | {med['cold_worker_ms']:.1f} |"
              f" {med['warm_ms']:.1f} | {med['warm_worker_ms']:.1f} |"
              f" {med['replacement_worker_ms']:.1f} |")


if __name__ == "__main__":
    main()

"""CPU efficiency on 20 ms tasks, fresh and right after tiny ones: procpool beside the stdlib pools.

Each pool, in a fresh interpreter, runs ``--tiny`` tiny tasks, then ``--tasks``
CPU-bound tasks of ``--ms`` each, submitted one by one, and waits for them.
Efficiency is the ideal time (tasks x ms / workers) over the measured wall
time; "spread" is how many of the CPU tasks the busiest worker ran. Medians
over ``--reps`` runs in rotating order, 2 workers everywhere.

    python scripts/bench_efficiency.py [--tasks 200] [--ms 20] [--tiny 0 3 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

POOLS = ("procpool", "ProcessPoolExecutor", "multiprocessing.Pool")
WORKERS = 2


def spin(seconds: float) -> int:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()


def spin_with_resource(resource: object, seconds: float) -> int:
    return spin(seconds)


def tiny(x: int) -> int:
    return x


def tiny_with_resource(resource: object, x: int) -> int:
    return x


def _make_resource() -> object:
    return None


def measure(pool: str, tasks: int, seconds: float, tiny_first: int) -> dict[str, float]:
    """Runs in a fresh interpreter."""
    if pool == "procpool":
        import procpool

        config = procpool.Config(on_create=_make_resource, worker_count=WORKERS,
                                 resource_pool_size=0)
        with procpool.TaskManager(config) as manager:
            for f in [manager.queue_task(tiny_with_resource, i) for i in range(tiny_first)]:
                f.result()
            start = time.perf_counter()
            pids = [f.result() for f in
                    [manager.queue_task(spin_with_resource, seconds) for _ in range(tasks)]]
            wall = time.perf_counter() - start
    elif pool == "ProcessPoolExecutor":
        with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) as ex:
            for f in [ex.submit(tiny, i) for i in range(tiny_first)]:
                f.result()
            start = time.perf_counter()
            pids = [f.result() for f in [ex.submit(spin, seconds) for _ in range(tasks)]]
            wall = time.perf_counter() - start
    else:
        with multiprocessing.get_context("fork").Pool(WORKERS) as mp_pool:
            for r in [mp_pool.apply_async(tiny, (i,)) for i in range(tiny_first)]:
                r.get()
            start = time.perf_counter()
            pids = [r.get() for r in
                    [mp_pool.apply_async(spin, (seconds,)) for _ in range(tasks)]]
            wall = time.perf_counter() - start
    ideal = tasks * seconds / WORKERS
    return {"efficiency": ideal / wall, "busiest": max(Counter(pids).values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--ms", type=float, default=20.0)
    parser.add_argument("--tiny", type=int, nargs="+", default=[0, 3, 2000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        pool, tiny_first = args.one[0], int(args.one[1])
        print(json.dumps(measure(pool, args.tasks, args.ms / 1000, tiny_first)))
        return
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rep in range(args.reps):
        order = POOLS[rep % len(POOLS):] + POOLS[: rep % len(POOLS)]
        for tiny_first in args.tiny:
            for pool in order:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", pool, str(tiny_first),
                     "--tasks", str(args.tasks), "--ms", str(args.ms)],
                    capture_output=True, text=True, check=True)
                runs.setdefault((pool, tiny_first), []).append(
                    json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"Medians of {args.reps} runs: {args.tasks} tasks of {args.ms:g} ms on {WORKERS}"
          " workers, submitted one by one.\n")
    print("| pool | tiny tasks first | CPU efficiency | busiest worker ran |")
    print("|---|---:|---:|---:|")
    for (pool, tiny_first), results in runs.items():
        efficiency = statistics.median(r["efficiency"] for r in results)
        busiest = statistics.median(r["busiest"] for r in results)
        print(f"| {pool} | {tiny_first} | {efficiency:.1%} | {busiest:.0f} of {args.tasks} |")


if __name__ == "__main__":
    main()

"""What a done-callback costs: sequential round trips waited for three ways.

Done-callbacks run on the pool's callback thread, never on its supervisor
(so a blocking callback cannot stop the pool): a future with a callback, or
an ``await`` (``asyncio.wrap_future`` adds one), pays one more thread hop
than ``result()``. This measures the three round trips side by side, each
run in a fresh interpreter, medians of ``--reps`` runs.

    python scripts/bench_callbacks.py [--round-trips 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time

import procpool

WAYS = ("result()", "await", "done-callback")


def noop(resource: object, x: int) -> int:
    return x


def make_resource() -> object:
    return None


def measure(round_trips: int) -> dict[str, float]:
    """Runs in a fresh interpreter: p50 round trip in µs for each way of waiting."""
    config = procpool.Config(on_create=make_resource, worker_count=2, resource_pool_size=0)
    out: dict[str, float] = {}
    with procpool.TaskManager(config) as manager:
        for _ in range(200):
            manager.queue_task(noop, 1).result()
        samples = []
        for i in range(round_trips):
            start = time.perf_counter()
            manager.queue_task(noop, i).result()
            samples.append(time.perf_counter() - start)
        out["result()"] = statistics.median(samples) * 1e6

        async def awaited() -> list[float]:
            found = []
            for i in range(round_trips):
                start = time.perf_counter()
                await manager.queue_task_async(noop, i)
                found.append(time.perf_counter() - start)
            return found

        out["await"] = statistics.median(asyncio.run(awaited())) * 1e6
        samples = []
        for i in range(round_trips):
            called = threading.Event()
            start = time.perf_counter()
            manager.queue_task(noop, i).add_done_callback(lambda f, e=called: e.set())
            called.wait()
            samples.append(time.perf_counter() - start)
        out["done-callback"] = statistics.median(samples) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.round_trips)))
        return
    runs = []
    for _ in range(args.reps):
        done = subprocess.run([sys.executable, __file__, "--one", "--round-trips",
                               str(args.round_trips)], capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"Round trip p50, µs: medians of {args.reps} runs of {args.round_trips}, 2 workers.\n")
    print("| waiting by | p50 µs | vs result() |")
    print("|---|---:|---:|")
    base = statistics.median(r["result()"] for r in runs)
    for way in WAYS:
        value = statistics.median(r[way] for r in runs)
        print(f"| {way} | {value:.0f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()

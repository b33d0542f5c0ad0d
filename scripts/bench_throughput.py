"""Tiny-task throughput and round-trip latency: procpool beside the stdlib pools.

Each measurement runs in a fresh interpreter, pools in rotating order, and the
table reports medians over the repetitions. 2 workers everywhere.

    python scripts/bench_throughput.py [--tasks 20000] [--round-trips 1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

POOLS = ("procpool", "ProcessPoolExecutor", "multiprocessing.Pool")


def noop(x: int) -> int:
    return x


def noop_with_resource(resource: object, x: int) -> int:
    return x


def _make_resource() -> object:
    return None


@contextmanager
def open_pool(pool: str) -> Iterator[tuple[Callable[[int], Any], Callable[[Iterable[int]], Any]]]:
    """Yield ``submit(x) -> waitable`` and ``map500(xs) -> results`` for one pool."""
    if pool == "procpool":
        import procpool

        config = procpool.Config(on_create=_make_resource, worker_count=2, resource_pool_size=0)
        with procpool.TaskManager(config) as manager:
            yield (
                lambda x: manager.queue_task(noop_with_resource, x),
                lambda xs: manager.map(noop_with_resource, xs, chunksize=500),
            )
    elif pool == "ProcessPoolExecutor":
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=ctx) as executor:
            yield (
                lambda x: executor.submit(noop, x),
                lambda xs: executor.map(noop, xs, chunksize=500),
            )
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as mp_pool:
            yield (
                lambda x: _Waitable(mp_pool.apply_async(noop, (x,))),
                lambda xs: mp_pool.map(noop, xs, chunksize=500),
            )


class _Waitable:
    """Give multiprocessing's AsyncResult the ``result()`` of a future."""

    def __init__(self, async_result: Any) -> None:
        self.async_result = async_result

    def result(self) -> Any:
        return self.async_result.get()


def measure(pool: str, tasks: int, round_trips: int) -> dict[str, float]:
    """Runs in a fresh interpreter: submit-one-by-one throughput, map, then round trips."""
    out: dict[str, float] = {}
    with open_pool(pool) as (submit, map500):
        submit(0).result()
        start = time.perf_counter()
        pending = [submit(i) for i in range(tasks)]
        for waitable in pending:
            waitable.result()
        out["submit_per_s"] = tasks / (time.perf_counter() - start)
        start = time.perf_counter()
        assert sum(map500(range(tasks))) > 0
        out["map500_per_s"] = tasks / (time.perf_counter() - start)
        samples = []
        for i in range(round_trips):
            t0 = time.perf_counter()
            submit(i).result()
            samples.append(time.perf_counter() - t0)
    samples.sort()
    out["rtt_p50_us"] = samples[len(samples) // 2] * 1e6
    out["rtt_p99_us"] = samples[int(len(samples) * 0.99)] * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--one", choices=POOLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.tasks, args.round_trips)))
        return
    runs: dict[str, list[dict[str, float]]] = {pool: [] for pool in POOLS}
    for rep in range(args.reps):
        order = POOLS[rep % len(POOLS) :] + POOLS[: rep % len(POOLS)]
        for pool in order:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    pool,
                    "--tasks",
                    str(args.tasks),
                    "--round-trips",
                    str(args.round_trips),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[pool].append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = statistics.median(r["submit_per_s"] for r in runs["multiprocessing.Pool"])
    print(f"Medians of {args.reps} runs, 2 workers.\n")
    print(
        "| pool | submit one by one: tasks/s | vs mp.Pool | map chunksize=500: tasks/s |"
        " round trip p50 µs | p99 µs |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for pool, results in runs.items():
        med: dict[str, Any] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"| {pool} | {med['submit_per_s']:,.0f} | {med['submit_per_s'] / base:.2f}x |"
            f" {med['map500_per_s']:,.0f} | {med['rtt_p50_us']:.0f} | {med['rtt_p99_us']:.0f} |"
        )


if __name__ == "__main__":
    main()

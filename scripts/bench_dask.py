"""Throughput on the Dask backend beside the local one: tiny tasks and 20 ms CPU tasks.

Each backend, in a fresh interpreter per run and in rotating order, starts a
pool of 2 workers (the Dask one on a LocalCluster of its own), then runs
``--tiny`` no-op tasks submitted one by one and awaited, ``map`` over as many
with ``chunksize=500``, and ``--tasks`` CPU-bound tasks of ``--ms`` each.
CPU efficiency is the ideal time (tasks x ms / workers) over the wall time.
Medians over ``--reps`` runs.

    python scripts/bench_dask.py [--tiny 5000] [--tasks 100] [--ms 20] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

BACKENDS = ("local", "dask")
WORKERS = 2


def noop(resource: object, x: int) -> int:
    return x


def spin(resource: object, seconds: float) -> float:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def make_resource() -> object:
    return None


def run_once(backend_name: str, tiny: int, tasks: int, ms: float) -> dict[str, float]:
    """One pool in this interpreter: its start-up and the three figures."""
    import procpool

    backend: Any = None
    if backend_name == "dask":
        from procpool.backends.dask import DaskBackend

        backend = DaskBackend()
    config = procpool.Config(on_create=make_resource, worker_count=WORKERS,
                             resource_pool_size=0)
    started = time.perf_counter()
    with procpool.TaskManager(config, backend=backend) as manager:
        startup = time.perf_counter() - started
        manager.queue_task(noop, 0).result()  # the kind's duration is known from here on
        began = time.perf_counter()
        futures = [manager.queue_task(noop, i) for i in range(tiny)]
        for future in futures:
            future.result()
        one_by_one = tiny / (time.perf_counter() - began)
        began = time.perf_counter()
        for _ in manager.map(noop, range(tiny), chunksize=500):
            pass
        mapped = tiny / (time.perf_counter() - began)
        began = time.perf_counter()
        futures = [manager.queue_task(spin, ms / 1000) for _ in range(tasks)]
        for future in futures:
            future.result()
        efficiency = (tasks * ms / 1000 / WORKERS) / (time.perf_counter() - began)
    return {"startup_s": startup, "one_by_one": one_by_one, "map": mapped,
            "cpu_efficiency": efficiency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=int, default=5000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--ms", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_once(args.child, args.tiny, args.tasks, args.ms)))
        return
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in BACKENDS}
    for rep in range(args.reps):
        order = BACKENDS[rep % len(BACKENDS):] + BACKENDS[:rep % len(BACKENDS)]
        for name in order:
            done = subprocess.run(
                [sys.executable, __file__, "--child", name, "--tiny", str(args.tiny),
                 "--tasks", str(args.tasks), "--ms", str(args.ms)],
                check=True, capture_output=True, text=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{WORKERS} workers, {args.tiny} tiny tasks, {args.tasks} tasks of {args.ms:g} ms,"
          f" medians of {args.reps}")
    print("| backend | start-up s | tiny one by one: tasks/s | map chunksize=500: tasks/s"
          f" | {args.ms:g} ms tasks: CPU efficiency |")
    print("|---|---:|---:|---:|---:|")
    for name in BACKENDS:
        med = {key: statistics.median(r[key] for r in runs[name]) for key in runs[name][0]}
        print(f"| {name} | {med['startup_s']:.2f} | {med['one_by_one']:,.0f} |"
              f" {med['map']:,.0f} | {med['cpu_efficiency']:.0%} |")


if __name__ == "__main__":
    main()

"""How long does TaskManager.dump_stats() take? It should be cheap enough for every 250 ms.

Run: python scripts/bench_dump_stats.py [--workers 8] [--calls 400]

Prints the median and 90th percentile of one call, with idle workers and with
every worker busy, next to stats() + metrics() alone (what dump_stats adds
is the psutil part) and to writing the result as a JSON file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import procpool
from procpool.procstats import write_json_atomic


def make_resource() -> dict[str, int]:
    return {"pid": os.getpid()}


def spin(resource: dict[str, int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def measure(call: Callable[[], object], calls: int, pause: float) -> list[float]:
    """Microseconds per call, ``pause`` seconds apart (as a monitoring loop would call it)."""
    for _ in range(10):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - started) / 1000)
        if pause:
            time.sleep(pause)
    return times


def report(label: str, times: list[float]) -> None:
    cuts = statistics.quantiles(times, n=10)
    print(f"{label:<44} median {statistics.median(times):8.0f} us   p90 {cuts[-1]:8.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--pause", type=float, default=0.002,
                        help="seconds between calls (default 0.002)")
    args = parser.parse_args()
    config = procpool.Config(on_create=make_resource, worker_count=args.workers,
                             resource_pool_size=0)
    with procpool.TaskManager(config) as manager, tempfile.TemporaryDirectory() as folder:
        processes = len(manager.dump_stats()["processes"])
        print(f"{args.workers} workers ({processes} processes with the supervisor's),"
              f" {args.calls} calls, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        report("stats() + metrics() alone",
               measure(lambda: (manager.stats(), manager.metrics()), args.calls, args.pause))
        report("dump_stats(), idle workers", measure(manager.dump_stats, args.calls, args.pause))
        path = os.path.join(folder, "stats.json")
        report("dump_stats() + write_json_atomic()",
               measure(lambda: write_json_atomic(path, manager.dump_stats()), args.calls,
                       args.pause))
        busy = [manager.queue_task(spin, 0.05) for _ in range(args.workers * 200)]
        report("dump_stats(), every worker busy", measure(manager.dump_stats, args.calls,
                                                            args.pause))
        for future in busy:
            future.cancel()


if __name__ == "__main__":
    main()

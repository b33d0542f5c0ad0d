"""Elasticity benchmark: a bursting pool against static pools, on replayed load traces.

Each trace (steady, step, spike, sine) is a fixed list of arrival times and task
lengths, replayed open-loop (a task is queued at its time whether or not earlier
ones are done) against three pools:

* ``burst``: ``worker_count`` base workers, bursting up to ``max_worker_count``;
* ``static-base``: ``worker_count`` workers, no bursting;
* ``static-max``: ``max_worker_count`` workers, no bursting.

For each run it measures the p95 wait (queued -> started, both stamps from the
monotonic clock that the workers share), the worker-seconds (live worker
processes, starting ones included, sampled from ``stats()`` every 20 ms and
integrated from the first arrival to the last completion or the end of the
trace, whichever is later) and the burst pool's scale events (its logged
decisions to start or retire workers). Each configuration runs ``--reps``
times; the tables show medians.

Tasks sleep (uniform 100-400 ms): bursting is about concurrency, and a 2-core
machine can host 8 sleeping workers meaningfully but not 8 busy ones. Peak load
is sized for the max pool (as ``max_worker_count`` should be): it keeps up,
and the base pool does not. The ``cpu`` trace is the exception: CPU-bound
tasks of 50 ms at up to 60/s, more than the cores can do, where bursting
should hold at the cores (and so keep each task's execution time).

Run: python scripts/bench_burst.py            (3 reps, about 9 minutes)
     python scripts/bench_burst.py --reps 1 --traces spike sine
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from loguru import logger

import procpool

BASE_WORKERS = 2
MAX_WORKERS = 8
BURST_INTERVAL = 0.2
TASK_SECONDS = (0.1, 0.4)  # uniform; mean 0.25 s, so 2 workers do 8 tasks/s and 8 do 32/s
SAMPLE_EVERY = 0.02  # seconds between stats() samples for the worker-seconds integral

CPU_TASK_SECONDS = 0.05  # the cpu trace's tasks spin this long

# Targets: p95 wait within one mean task time on these traces; worker-seconds as a ratio of
# the static max pool's; at most this many runs of scale events in one direction per load
# change (none for a steady load); CPU-bound tasks on at most cores + 1 workers, with a p95
# execution time no worse than the static base pool's (within noise).
P95_WAIT_SECONDS = sum(TASK_SECONDS) / 2
P95_WAIT_TRACES = ("step", "sine")
WORKER_SECONDS_RATIO = 0.6
WORKER_SECONDS_TRACES = ("spike", "sine")
RUNS_PER_LOAD_CHANGE = 2
EXECUTION_NOISE = 1.1


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    seconds: float
    load_changes: int  # rises and falls of the load, to judge the scale events by
    arrivals: list[tuple[float, float]]  # (offset seconds, task seconds), sorted
    cpu_bound: bool = False


def _paced(rate: Callable[[float], float], seconds: float) -> list[float]:
    """Arrival times of a deterministic stream whose rate (tasks/s) follows ``rate(t)``."""
    times, owed, t, step = [], 0.5, 0.0, 0.001
    while t < seconds:
        owed += rate(t) * step
        while owed >= 1.0:
            owed -= 1.0
            times.append(t)
        t += step
    return times


def make_traces(seed: int = 7) -> dict[str, Trace]:
    rng = random.Random(seed)

    def trace(name: str, description: str, seconds: float, changes: int,
              times: list[float]) -> Trace:
        times = sorted(times)
        return Trace(name, description, seconds, changes,
                     [(t, rng.uniform(*TASK_SECONDS)) for t in times])

    def sine(t: float) -> float:
        return 14.0 - 12.0 * math.cos(2 * math.pi * t / 12.0)

    return {
        "steady": trace("steady", "6/s for 8 s (75% of the base pool)", 8.0, 0,
                        _paced(lambda t: 6.0, 8.0)),
        "step": trace("step", "4/s for 2 s, then 20/s for 8 s", 10.0, 1,
                      _paced(lambda t: 4.0 if t < 2.0 else 20.0, 10.0)),
        "spike": trace("spike", "4/s for 10 s, plus 60 tasks at once at 2 s", 10.0, 2,
                       _paced(lambda t: 4.0, 10.0) + [2.0] * 60),
        "sine": trace("sine", "2/s to 26/s and back over 12 s", 12.0, 2, _paced(sine, 12.0)),
        "cpu": Trace("cpu", "CPU-bound 50 ms tasks: 4/s, 60/s from 2 s to 6 s, then 4/s", 10.0,
                     2, [(t, CPU_TASK_SECONDS) for t in _paced(
                         lambda t: 60.0 if 2.0 <= t < 6.0 else 4.0, 10.0)], cpu_bound=True),
    }


def pool_configs(burst_options: dict[str, Any]) -> dict[str, procpool.Config[Any]]:
    common: dict[str, Any] = {"on_create": make_resource, "resource_pool_size": 0}
    return {
        "burst": procpool.Config(worker_count=BASE_WORKERS, max_worker_count=MAX_WORKERS,
                                 burst_interval=BURST_INTERVAL, **burst_options, **common),
        "static-base": procpool.Config(worker_count=BASE_WORKERS, **common),
        "static-max": procpool.Config(worker_count=MAX_WORKERS, **common),
    }


def make_resource() -> dict[str, int]:
    return {}


def sleep_task(resource: dict[str, int], seconds: float) -> tuple[float, float]:
    """Runs in the worker: the work, and when it started and finished."""
    started = time.monotonic()
    time.sleep(seconds)
    return started, time.monotonic()


def spin_task(resource: dict[str, int], seconds: float) -> tuple[float, float]:
    """Runs in the worker: ``seconds`` of CPU work (stretched if cores are shared)."""
    started = time.monotonic()
    spent, cpu = 0.0, time.process_time()
    while spent < seconds:
        spent = time.process_time() - cpu
    return started, time.monotonic()


@dataclass
class Run:
    p95_wait: float
    mean_wait: float
    p95_execution: float
    worker_seconds: float
    events: int  # logged decisions to start or retire workers
    episodes: int  # runs of decisions in one direction (up, then down: 2)
    peak_workers: int


@dataclass
class EventLog:
    """Collects the burst decisions that procpool logs (one line per scale event)."""

    moves: list[str] = field(default_factory=list)

    def sink(self, message: Any) -> None:
        text = message.record["message"]
        if text.startswith("burst: starting"):
            self.moves.append("up")
        elif text.startswith("burst: retiring"):
            self.moves.append("down")


def run_once(trace: Trace, config: procpool.Config[Any], events: EventLog) -> Run:
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    with procpool.TaskManager(config) as manager:

        def sample() -> None:
            while not stop.is_set():
                stats = manager.stats()
                samples.append((monotonic(), stats.base_workers + stats.burst_workers))
                stop.wait(SAMPLE_EVERY)

        events.moves.clear()
        sampler = threading.Thread(target=sample, daemon=True)
        start = monotonic()
        sampler.start()
        submitted: list[tuple[float, Any]] = []
        for offset, seconds in trace.arrivals:
            delay = start + offset - monotonic()
            if delay > 0:
                time.sleep(delay)
            task = spin_task if trace.cpu_bound else sleep_task
            submitted.append((monotonic(), manager.queue_task(task, seconds)))
        stamps = [(queued, future.result()) for queued, future in submitted]
        end = max(start + trace.seconds, *(finished for _, (_, finished) in stamps))
        while monotonic() < end:  # the trace may end after its last task
            time.sleep(end - monotonic())
        stop.set()
        sampler.join()
        moves = list(events.moves)
    waits = sorted(started - queued for queued, (started, _) in stamps)
    executions = sorted(finished - started for _, (started, finished) in stamps)
    return Run(
        p95_wait=_p95(waits),
        mean_wait=statistics.fmean(waits),
        p95_execution=_p95(executions),
        worker_seconds=_integral(samples, start, end),
        events=len(moves),
        episodes=len(moves) and 1 + sum(a != b for a, b in itertools.pairwise(moves)),
        peak_workers=max(count for _, count in samples),
    )


def _p95(values: list[float]) -> float:
    return values[max(0, math.ceil(0.95 * len(values)) - 1)]


def _integral(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Worker-seconds from ``start`` to ``end``: each sample holds until the next one."""
    total = 0.0
    for (t, count), (t_next, _) in zip(samples, [*samples[1:], (end, 0)], strict=True):
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            total += count * (hi - lo)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--traces", nargs="*", default=["steady", "step", "spike", "sine", "cpu"])
    parser.add_argument("--cooldown", type=float, help="burst_cooldown (default: Config's)")
    parser.add_argument("--json", help="also write every run's numbers to this file")
    args = parser.parse_args()

    logger.remove()  # the benchmark prints its own tables; keep only the burst decisions
    events = EventLog()
    logger.add(events.sink, level="INFO", filter="procpool")
    logger.enable("procpool")

    traces = make_traces()
    configs = pool_configs({} if args.cooldown is None else {"burst_cooldown": args.cooldown})
    runs: dict[tuple[str, str], list[Run]] = {}
    began = monotonic()
    load_at_start = os.getloadavg()[0]
    for rep in range(args.reps):
        for name in args.traces:
            pools = list(configs)
            pools = pools[rep % len(pools):] + pools[:rep % len(pools)]  # rotate the order
            for pool in pools:
                result = run_once(traces[name], configs[pool], events)
                runs.setdefault((name, pool), []).append(result)
                print(f"rep {rep + 1} {name:6} {pool:11} p95 wait {result.p95_wait:6.3f} s "
                      f"worker-s {result.worker_seconds:6.1f} events {result.events} "
                      f"peak {result.peak_workers}", file=sys.stderr, flush=True)
    took = monotonic() - began
    load = (load_at_start, os.getloadavg()[0])

    print(report(traces, configs, runs, args, took, load))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({f"{t}/{p}": [vars(r) for r in rs] for (t, p), rs in runs.items()}, out,
                      indent=1)


def report(traces: dict[str, Trace], configs: dict[str, procpool.Config[Any]],
           runs: dict[tuple[str, str], list[Run]], args: argparse.Namespace, took: float,
           load: tuple[float, float]) -> str:
    def values(trace: str, pool: str, what: str) -> list[float]:
        return [float(getattr(r, what)) for r in runs[trace, pool]]

    def med(trace: str, pool: str, what: str) -> float:
        return statistics.median(values(trace, pool, what))

    def spread(trace: str, pool: str, what: str, digits: int) -> str:
        got = values(trace, pool, what)
        low, high = f"{min(got):.{digits}f}", f"{max(got):.{digits}f}"
        text = f"{statistics.median(got):.{digits}f}"
        return text if low == high else f"{text} ({low}-{high})"

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"Python {platform.python_version()}, {platform.system()}, {cores} usable cores, "
        f"load average {load[0]:.1f} at start and {load[1]:.1f} at the end; "
        f"{args.reps} reps, {took / 60:.1f} min in all.",
        f"burst: {BASE_WORKERS} base workers bursting to {MAX_WORKERS} (burst_interval "
        f"{BURST_INTERVAL} s, burst_cooldown {configs['burst'].burst_cooldown} s, other "
        f"settings default). Medians of the reps, (min-max) where they differ.",
        "",
        "| trace | pool | p95 wait s | mean wait s | p95 execution s | worker-s | peak workers "
        "| scale events |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.traces:
        for pool in ("burst", "static-base", "static-max"):
            events = spread(name, pool, "events", 0) if pool == "burst" else "-"
            lines.append(
                f"| {name} | {pool} | {spread(name, pool, 'p95_wait', 3)} "
                f"| {med(name, pool, 'mean_wait'):.3f} | {med(name, pool, 'p95_execution'):.3f} "
                f"| {spread(name, pool, 'worker_seconds', 1)} "
                f"| {med(name, pool, 'peak_workers'):.0f} | {events} |"
            )
    lines += [
        "",
        "| trace | load | burst p95 wait | worker-s, burst / static-max "
        "| runs of scale events (events) for the load changes | CPU-bound: peak workers, "
        "p95 execution burst / static-base |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in args.traces:
        trace = traces[name]
        wait = med(name, "burst", "p95_wait")
        wait_ok = ("met" if wait <= P95_WAIT_SECONDS else "missed") \
            if name in P95_WAIT_TRACES else "no target"
        work = med(name, "burst", "worker_seconds") / med(name, "static-max", "worker_seconds")
        work_ok = ("met" if work <= WORKER_SECONDS_RATIO else "missed") \
            if name in WORKER_SECONDS_TRACES else "no target"
        decisions, episodes = med(name, "burst", "events"), med(name, "burst", "episodes")
        allowed = RUNS_PER_LOAD_CHANGE * trace.load_changes
        runs_ok = "met" if episodes <= allowed else "missed"
        cpu = "-"
        if trace.cpu_bound:
            peak = med(name, "burst", "peak_workers")
            slower = med(name, "burst", "p95_execution") / med(name, "static-base",
                                                                "p95_execution")
            ok = peak <= (cores or 1) + 1 and slower <= EXECUTION_NOISE
            cpu = f"{peak:.0f}, {slower:.2f}x ({'met' if ok else 'missed'})"
        lines.append(
            f"| {name} | {trace.description} | {wait:.3f} s ({wait_ok}) | {work:.2f} ({work_ok}) "
            f"| {episodes:.0f} ({decisions:.0f}) for {trace.load_changes} ({runs_ok}) | {cpu} |"
        )
    lines += [
        "",
        f"Targets: p95 wait <= {P95_WAIT_SECONDS:.3f} s (one mean task time) on "
        f"{' and '.join(P95_WAIT_TRACES)}; worker-seconds <= {WORKER_SECONDS_RATIO}x "
        f"static-max on {' and '.join(WORKER_SECONDS_TRACES)}; at most "
        f"{RUNS_PER_LOAD_CHANGE} runs of scale events in one direction per load change "
        f"(none on steady); CPU-bound tasks on at most cores + 1 workers with a p95 "
        f"execution time within {EXECUTION_NOISE}x the static base pool's.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The burst benchmark's traces in virtual time: what the controller decides, in a second.

Replays the traces of ``bench_burst.py`` against the pure ``BurstController``
on a simulated pool (no processes, no sleeps) and against two references:

* ``static-max``: ``max_worker_count`` workers from the start (what the
  benchmark's p95 target is measured against);
* ``first-wait-max``: the most eager reactive controller possible: all
  ``max_worker_count`` workers at the first tick that sees a task waiting,
  never retired. No controller that only reacts to what has arrived can
  start workers sooner or more of them, so its p95 wait is the lowest any
  reactive controller reaches, and its worker-seconds what that costs.

A worker takes ``--start`` seconds to start (spawn + ``on_create``); starts
that overlap share the machine's cores, so k of them on c cores take
``start * max(1, k / c)`` each. Ticks, rates, the recent mean task time and
the cooldown are computed as the supervisor computes them; every wait includes
the pool's own dispatch time (``DISPATCH_SECONDS``).

Run: python scripts/sim_burst.py                 # start-up 0.15 s and 0.02 s
     python scripts/sim_burst.py --start 0.5 --traces step
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from bench_burst import (
    BASE_WORKERS,
    BURST_INTERVAL,
    MAX_WORKERS,
    P95_WAIT_RATIO,
    WORKER_SECONDS_RATIO,
    WORKER_SECONDS_TRACES,
    Trace,
    make_traces,
)

from procpool.config import Config
from procpool.policy.burst import BurstController, BurstDecision, BurstSnapshot
from procpool.policy.rates import DurationHistogram, RateWindow

STEP = 0.001  # seconds of virtual time per simulation step
# Added to every wait: handing a task to an idle worker is not free. 2 ms is the static
# max pool's p95 wait in bench_burst.py, where no task ever queues.
DISPATCH_SECONDS = 0.002
Controller = Callable[[BurstSnapshot], BurstDecision]


@dataclass
class SimWorker:
    burst: bool
    ready_at: float
    busy_until: float | None = None
    task_seconds: float = 0.0
    idle_since: float = 0.0
    leaving: bool = False


@dataclass(frozen=True)
class Outcome:
    p95_wait: float
    worker_seconds: float
    events: int


def simulate(trace: Trace, workers: int, controller: Controller | None, start: float,
             cores: int) -> Outcome:
    pool: dict[int, SimWorker] = {wid: SimWorker(False, 0.0) for wid in range(workers)}
    next_id = workers
    arrivals, endings = RateWindow(), RateWindow()
    task_times, start_times = DurationHistogram(), DurationHistogram()
    queue: list[tuple[float, float]] = []  # (arrived at, task seconds)
    waits: list[float] = []
    worker_seconds, events, next_arrival, t, next_tick = 0.0, 0, 0, 0.0, BURST_INTERVAL
    while next_arrival < len(trace.arrivals) or queue or t < trace.seconds or any(
        w.busy_until is not None for w in pool.values()
    ):
        t += STEP
        while next_arrival < len(trace.arrivals) and trace.arrivals[next_arrival][0] <= t:
            queue.append((t, trace.arrivals[next_arrival][1]))
            arrivals.record(t)
            next_arrival += 1
        for wid, w in list(pool.items()):
            if w.busy_until is not None and w.busy_until <= t:
                w.busy_until, w.idle_since = None, t
                endings.record(t)
                task_times.record(w.task_seconds)
            if w.leaving and w.busy_until is None:
                del pool[wid]
        for w in sorted(pool.values(), key=lambda w: w.idle_since):
            if queue and not w.leaving and w.ready_at <= t and w.busy_until is None:
                arrived, seconds = queue.pop(0)
                waits.append(t - arrived + DISPATCH_SECONDS)
                w.busy_until, w.task_seconds = t + seconds, seconds
        worker_seconds += len(pool) * STEP
        if controller is None or t < next_tick:
            continue
        next_tick += BURST_INTERVAL
        idle_burst = sorted(
            (wid for wid, w in pool.items()
             if w.burst and not w.leaving and w.ready_at <= t and w.busy_until is None),
            key=lambda wid: pool[wid].idle_since,
        )
        decision = controller(BurstSnapshot(
            now=t,
            arrival_rate=arrivals.rate(t),
            completion_rate=endings.rate(t),
            queued_tasks=len(queue),
            base_workers=BASE_WORKERS,
            burst_workers=sum(w.burst for w in pool.values()),
            starting_workers=sum(w.ready_at > t for w in pool.values()),
            busy_workers=sum(w.busy_until is not None for w in pool.values()),
            idle_burst_workers=tuple(idle_burst),
            mean_task_seconds=task_times.recent_mean if task_times.count else None,
            worker_start_seconds=start_times.recent_mean if start_times.count else None,
        ))
        starting = sum(w.ready_at > t for w in pool.values())
        for _ in range(min(decision.start, MAX_WORKERS - len(pool))):
            took = start * max(1.0, (starting + decision.start) / cores)
            pool[next_id] = SimWorker(True, t + took, idle_since=t + took)
            start_times.record(took)
            next_id += 1
        for wid in decision.retire:
            pool[wid].leaving = True
        events += bool(decision.start) + bool(decision.retire)
    waits.sort()
    return Outcome(waits[max(0, math.ceil(0.95 * len(waits)) - 1)], worker_seconds, events)


def procpool_controller(start: float) -> Controller:
    defaults = Config(on_create=dict)
    controller = BurstController(worker_count=BASE_WORKERS, max_worker_count=MAX_WORKERS,
                                 interval=BURST_INTERVAL)
    # As the supervisor does: the cooldown in ticks, never shorter than a start-up.
    controller.cooldown_ticks = max(
        1, math.ceil(max(defaults.burst_cooldown, start) / BURST_INTERVAL - 1e-9))
    return controller.decide


def first_wait_max(snap: BurstSnapshot) -> BurstDecision:
    free = snap.base_workers + snap.burst_workers - snap.busy_workers
    if snap.queued_tasks > free:
        return BurstDecision(start=MAX_WORKERS - snap.base_workers - snap.burst_workers)
    return BurstDecision()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=float, nargs="*", default=[0.15, 0.02],
                        help="seconds to start one worker (default: 0.15 and 0.02)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--traces", nargs="*", default=["steady", "step", "spike", "sine"])
    args = parser.parse_args()
    traces = make_traces()
    print(f"Virtual time; {BASE_WORKERS} base workers bursting to {MAX_WORKERS}, "
          f"{args.cores} cores. Ratios to static-max; targets: p95 wait <= {P95_WAIT_RATIO}x, "
          f"worker-s <= {WORKER_SECONDS_RATIO}x on {' and '.join(WORKER_SECONDS_TRACES)}.")
    for start in args.start:
        print(f"\nWorker start-up {start} s\n")
        print("| trace | pool | p95 wait s | p95 ratio | worker-s ratio | scale events |")
        print("|---|---|---:|---:|---:|---:|")
        for name in args.traces:
            trace = traces[name]
            static = simulate(trace, MAX_WORKERS, None, start, args.cores)
            pools = {"procpool": procpool_controller(start), "first-wait-max": first_wait_max}
            for label, controller in pools.items():
                got = simulate(trace, BASE_WORKERS, controller, start, args.cores)
                print(f"| {name} | {label} | {got.p95_wait:.3f} "
                      f"| {got.p95_wait / static.p95_wait:.2f} "
                      f"| {got.worker_seconds / static.worker_seconds:.2f} | {got.events} |")
            print(f"| {name} | static-max | {static.p95_wait:.3f} | 1.00 | 1.00 | - |")


if __name__ == "__main__":
    main()

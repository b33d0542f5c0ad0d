"""The burst benchmark's traces in virtual time: what a controller decides, in a second.

Replays the traces of ``bench_burst.py`` (and a CPU-bound one of its own)
against pure burst controllers on a simulated pool (no processes, no sleeps):

* ``v2 ...``: procpool's ``BurstController`` with the settings shown;
* ``plain``: workers = ceil(arrival rate x mean task time + 0.5 x queued tasks),
  scale-down stabilised over 1 s (the rule the v2 controller has to beat), with
  the arrival rate over the metrics window (2 s) or over 0.4 s;
* ``shipped``: the controller of procpool 0.1 (grows once the backlog would
  take more than 2 s to drain), transcribed here to compare against;
* ``first-wait-max``: the most eager reactive controller: all
  ``max_worker_count`` workers at the first tick that sees a task waiting,
  never retired;
* ``static-max``, ``static-base``: no bursting, at the maximum or the base size.

A worker takes ``--start`` seconds to start (spawn + ``on_create``); starts
that overlap share the machine's cores, so k of them on c cores take
``start * max(1, k / c)`` each. A task of w seconds with CPU share s (the
trace's) takes, while b workers run such tasks on c cores,
``w * ((1 - s) + s * max(1, b * s / c))``: a CPU-bound task's wall time
stretches by max(1, b / c), a sleeping one not at all. Ticks, rates, the
recent mean task time, the recent CPU share and the cooldown are computed as
the supervisor computes them; every wait includes the pool's own dispatch
time (``DISPATCH_SECONDS``). Paced traces tick on their own grid (every
0.2 s from the first arrival's instant) and nothing is late, so a 0.4 s rate
counts exactly 8 of 20/s; ``--jitter`` replays them as a busy machine does
(``Jitter``), which is where the runs of scale events differ.

Run: python scripts/sim_burst.py                  # the frontier and the CPU-bound trace
     python scripts/sim_burst.py --start 0.15 --traces step sine
     python scripts/sim_burst.py --poisson 1 2 3  # Poisson arrivals at the traces' rates (medians)
     python scripts/sim_burst.py --jitter 1 2 3   # a busy machine's timing noise (medians)
     python scripts/sim_burst.py --detail         # one row per trace and controller
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from bench_burst import (
    BASE_WORKERS,
    BURST_INTERVAL,
    MAX_WORKERS,
    TASK_SECONDS,
    Trace,
    _paced,
    make_traces,
)

from procpool.config import Config
from procpool.policy.burst import BurstController, BurstDecision, BurstSnapshot
from procpool.policy.rates import DurationHistogram, RateWindow, RecentShare

STEP = 0.001  # seconds of virtual time per simulation step
# Added to every wait: handing a task to an idle worker is not free. 2 ms is the static
# max pool's p95 wait in bench_burst.py, where no task ever queues.
DISPATCH_SECONDS = 0.002
# CPU share of the benchmark's sleeping tasks (a sleep costs a little CPU around it).
SLEEP_CPU_SHARE = 0.01
# The targets, in task time: p95 wait within one mean task time on step and sine.
P95_WAIT_TARGET = 0.25
WORKER_SECONDS_TARGET = 0.6  # x static-max, on sine and spike
RUNS_PER_LOAD_CHANGE = 2  # runs of scale events in one direction, per load change
# --jitter: the largest delays (uniform from 0, seconds) of a tick, of a task's submission
# and of a sleeping task's end, on a busy 2-core machine. With them (and the tick grid at a
# random phase of the arrivals) v2 of procpool 0.1 made 3 runs of scale events on the step
# (1 to 5 over seeds), where bench_burst.py measured 3 to 7; paced, on the grid, it made 1.
# The task delay is small because bench_burst.py's p95 execution equals the task's own.
TICK_JITTER = 0.02
ARRIVAL_JITTER = 0.02
TASK_JITTER = 0.001
Controller = Callable[[BurstSnapshot], BurstDecision]


@dataclass(frozen=True)
class Jitter:
    """Timing noise of a real pool on a busy machine, each a seeded uniform delay.

    ``bench_burst.py`` starts its trace whenever the pool's constructor returns, so the
    burst ticks fall at any phase of the arrivals (here: a random offset of the tick grid);
    a tick comes late by up to ``tick`` seconds (the supervisor wakes late), a task is
    queued late by up to ``arrival`` (the submitting thread's sleep overran; later tasks
    are never queued before it) and a sleeping task runs long by up to ``task``.
    """

    seed: int
    tick: float = TICK_JITTER
    arrival: float = ARRIVAL_JITTER
    task: float = TASK_JITTER


@dataclass(frozen=True)
class SimTrace:
    trace: Trace
    cpu_share: float  # of each task when it runs alone
    jitter: Jitter | None = None  # None: ticks on the trace's own grid, nothing late


def sim_traces() -> dict[str, SimTrace]:
    traces = {name: SimTrace(t, SLEEP_CPU_SHARE) for name, t in make_traces().items()}
    # CPU-bound: 100-400 ms of computing per task, 4/s for 2 s and then 12/s for 8 s. Two
    # cores complete 8/s however many workers share them, so bursting can only slow tasks.
    rng = random.Random(7)
    times = _paced(lambda t: 4.0 if t < 2.0 else 12.0, 10.0)
    cpu = Trace("cpu", "CPU-bound: 4/s for 2 s, then 12/s for 8 s", 10.0, 1,
                [(t, rng.uniform(*TASK_SECONDS)) for t in times])
    traces["cpu"] = SimTrace(cpu, 1.0)
    return traces


def poissonised(traces: dict[str, SimTrace], seed: int) -> dict[str, SimTrace]:
    """The same traces with Poisson arrivals of the same rate (and fresh task lengths).

    A paced stream puts its k-th arrival where the expected count reaches k + 0.5; mapping
    the points of a unit-rate Poisson stream through that curve gives a Poisson stream of
    the trace's rate (the spike's 60 simultaneous tasks stay a batch of about 60).
    """
    rng = random.Random(seed)
    made = {}
    for name, sim in traces.items():
        paced = [t for t, _ in sim.trace.arrivals]
        times, count = [], rng.expovariate(1.0)
        while count < len(paced) - 0.5:
            k = max(0.0, count - 0.5)
            low = int(k)
            high = min(low + 1, len(paced) - 1)
            times.append(paced[low] + (paced[high] - paced[low]) * (k - low))
            count += rng.expovariate(1.0)
        trace = sim.trace
        made[name] = SimTrace(
            Trace(trace.name, trace.description, trace.seconds, trace.load_changes,
                  [(t, rng.uniform(*TASK_SECONDS)) for t in times]),
            sim.cpu_share,
        )
    return made


@dataclass
class SimWorker:
    burst: bool
    ready_at: float
    remaining: float | None = None  # seconds of work left at full speed; None when idle
    started_at: float = 0.0
    work: float = 0.0
    idle_since: float = 0.0
    leaving: bool = False


@dataclass
class Outcome:
    p95_wait: float
    worker_seconds: float
    moves: list[str] = field(default_factory=list)  # "up" / "down", one per scale event
    peak: int = 0
    p95_execution: float = 0.0
    held: int = 0  # ticks at which a wanted start was refused (CPU cap or gain check)

    @property
    def events(self) -> int:
        return len(self.moves)

    @property
    def runs(self) -> int:
        """Runs of decisions in one direction: "up, up, down" is 2."""
        return len(list(itertools.groupby(self.moves)))


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def jittered(traces: dict[str, SimTrace], seed: int) -> dict[str, SimTrace]:
    """The same traces, replayed with the timing noise of ``Jitter(seed)``."""
    return {name: SimTrace(sim.trace, sim.cpu_share, Jitter(seed))
            for name, sim in traces.items()}


def simulate(sim: SimTrace, workers: int, controller: Controller | None, start: float,
             cores: int, cpu_info: bool = True) -> Outcome:
    trace, share, jitter = sim.trace, sim.cpu_share, sim.jitter
    rng = random.Random(jitter.seed) if jitter else None
    if jitter is not None and rng is not None:
        late, arrivals_at = 0.0, []
        for at, seconds in trace.arrivals:
            late = max(late, at + rng.uniform(0.0, jitter.arrival))
            arrivals_at.append((late, seconds + rng.uniform(0.0, jitter.task)))
        trace = Trace(trace.name, trace.description, trace.seconds, trace.load_changes,
                      arrivals_at)
    pool: dict[int, SimWorker] = {wid: SimWorker(False, 0.0) for wid in range(workers)}
    next_id = workers
    arrivals, endings = RateWindow(), RateWindow()
    task_times, start_times = DurationHistogram(), DurationHistogram()
    cpu = RecentShare()
    queue: list[tuple[float, float]] = []  # (arrived at, task seconds)
    waits: list[float] = []
    walls: list[float] = []
    out = Outcome(0.0, 0.0)
    arrived = ended = next_arrival = 0
    executed = 0.0
    t, next_tick = 0.0, BURST_INTERVAL
    tick_at = next_tick
    if jitter is not None and rng is not None:
        next_tick = rng.uniform(0.0, BURST_INTERVAL)
        tick_at = next_tick + rng.uniform(0.0, jitter.tick)
    while next_arrival < len(trace.arrivals) or queue or t < trace.seconds or any(
        w.remaining is not None for w in pool.values()
    ):
        t += STEP
        while next_arrival < len(trace.arrivals) and trace.arrivals[next_arrival][0] <= t:
            queue.append((t, trace.arrivals[next_arrival][1]))
            arrivals.record(t)
            arrived += 1
            next_arrival += 1
        running = sum(w.remaining is not None for w in pool.values())
        stretch = max(1.0, running * share / cores)
        speed = 1.0 / ((1.0 - share) + share * stretch)
        for wid, w in list(pool.items()):
            if w.remaining is not None:
                w.remaining -= STEP * speed
                if w.remaining <= 1e-12:
                    wall = t - w.started_at
                    w.remaining, w.idle_since = None, t
                    endings.record(t)
                    ended += 1
                    executed += wall
                    task_times.record(wall)
                    cpu.record(share * w.work, wall)
                    walls.append(wall)
            if w.leaving and w.remaining is None:
                del pool[wid]
        for w in sorted(pool.values(), key=lambda w: w.idle_since):
            if queue and not w.leaving and w.ready_at <= t and w.remaining is None:
                arrived_at, seconds = queue.pop(0)
                waits.append(t - arrived_at + DISPATCH_SECONDS)
                w.remaining, w.work, w.started_at = seconds, seconds, t
        out.worker_seconds += len(pool) * STEP
        out.peak = max(out.peak, len(pool))
        if controller is None or t < tick_at:
            continue
        next_tick += BURST_INTERVAL
        tick_at = next_tick + (rng.uniform(0.0, jitter.tick) if jitter and rng else 0.0)
        idle_burst = sorted(
            (wid for wid, w in pool.items()
             if w.burst and not w.leaving and w.ready_at <= t and w.remaining is None),
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
            busy_workers=sum(w.remaining is not None for w in pool.values()),
            idle_burst_workers=tuple(idle_burst),
            mean_task_seconds=task_times.recent_mean if task_times.count else None,
            worker_start_seconds=start_times.recent_mean if start_times.count else None,
            arrived_total=arrived,
            ended_total=ended,
            executed_seconds_total=executed,
            cpu_share=cpu.value if cpu_info else None,
            usable_cores=cores if cpu_info else None,
        ))
        starting = sum(w.ready_at > t for w in pool.values())
        started = max(0, min(decision.start, MAX_WORKERS - len(pool)))
        for _ in range(started):
            took = start * max(1.0, (starting + decision.start) / cores)
            pool[next_id] = SimWorker(True, t + took, idle_since=t + took)
            start_times.record(took)
            next_id += 1
        for wid in decision.retire:
            pool[wid].leaving = True
        # As bench_burst.py counts them: the starts and retirements the pool logs.
        out.moves += ["up"] * bool(started) + ["down"] * bool(decision.retire)
        out.held += bool(decision.held)
    out.p95_wait = _p95(waits)
    out.p95_execution = _p95(walls)
    return out


COOLDOWN = Config(on_create=dict).burst_cooldown  # seconds; --cooldown changes it


def cooldown_ticks(start: float) -> int:
    """As the supervisor does: the cooldown in ticks, never shorter than a start-up."""
    return max(1, math.ceil(max(COOLDOWN, start) / BURST_INTERVAL - 1e-9))


def v2_controller(start: float, **settings: float) -> Controller:
    controller = BurstController(worker_count=BASE_WORKERS, max_worker_count=MAX_WORKERS,
                                 interval=BURST_INTERVAL, cooldown_ticks=cooldown_ticks(start),
                                 **settings)
    return controller.decide


class PlainRule:
    """ceil(arrival rate x mean task time / 1.0 + 0.5 x queued), scale-down held over the cooldown.

    ``window`` None takes the arrival rate over the metrics window (2 s), as the rule was
    first tried; a number measures it over that many seconds from the arrival counter.
    """

    def __init__(self, start: float, window: float | None = None) -> None:
        self.window = window
        self.ticks = cooldown_ticks(start)
        self.samples: list[tuple[float, int]] = []
        self.recommended: list[int] = []
        self.retiring: set[int] = set()

    def rate(self, s: BurstSnapshot) -> float:
        if self.window is None or s.arrived_total is None:
            return s.arrival_rate
        self.samples.append((s.now, s.arrived_total))
        then = next((x for x in reversed(self.samples)
                     if x[0] <= s.now - self.window + BURST_INTERVAL / 2), self.samples[0])
        return (s.arrived_total - then[1]) / (s.now - then[0]) if s.now > then[0] else 0.0

    def __call__(self, s: BurstSnapshot) -> BurstDecision:
        self.retiring &= set(s.idle_burst_workers)
        mean = s.mean_task_seconds or 0.0
        want = math.ceil(self.rate(s) * mean / 1.0 + 0.5 * s.queued_tasks - 1e-9)
        want = max(s.base_workers, min(MAX_WORKERS, want))
        self.recommended = [*self.recommended, want][-self.ticks:]
        workers = s.base_workers + s.burst_workers - len(self.retiring)
        if want > workers:
            return BurstDecision(start=want - workers)
        keep = max(self.recommended)
        idle = [w for w in s.idle_burst_workers if w not in self.retiring]
        retire = tuple(idle[:max(0, workers - keep)])
        self.retiring.update(retire)
        return BurstDecision(retire=retire)


class Shipped:
    """procpool 0.1's controller: grow when the backlog would take > 2 s to drain."""

    def __init__(self, start: float) -> None:
        self.ticks = cooldown_ticks(start)
        self.quiet = 0
        self.retiring: set[int] = set()

    def __call__(self, s: BurstSnapshot) -> BurstDecision:
        self.retiring &= set(s.idle_burst_workers)
        total = s.base_workers + s.burst_workers
        workers = total - len(self.retiring)
        if s.queued_tasks == 0:
            self.quiet += 1
            return self._shrink(s, workers)
        self.quiet = 0
        free = max(workers - s.busy_workers, 0)
        growth = max(s.arrival_rate - s.completion_rate, 0.0)
        lead = s.worker_start_seconds or 0.0
        useful = math.ceil(s.queued_tasks + growth * lead - 1e-9) - free
        room = MAX_WORKERS - total
        if useful <= 0 or room <= 0:
            return BurstDecision()
        if s.mean_task_seconds is None:
            want = min(s.queued_tasks - free, max(s.base_workers, 1))
        else:
            horizon = max(2.0, lead)
            backlog = s.queued_tasks + growth * horizon
            if workers > 0 and backlog * s.mean_task_seconds / workers <= 2.0:
                return BurstDecision()
            needed = max(math.ceil(backlog * s.mean_task_seconds / horizon - 1e-9), 1)
            want = min(needed - free, useful)
        return BurstDecision(start=max(0, min(want, room)))

    def _shrink(self, s: BurstSnapshot, workers: int) -> BurstDecision:
        idle = [w for w in s.idle_burst_workers if w not in self.retiring]
        if not idle or self.quiet < self.ticks:
            return BurstDecision()
        mean = s.mean_task_seconds
        demand = math.ceil(s.arrival_rate * mean - 1e-9) if mean is not None else 0
        keep = max(s.base_workers, s.busy_workers, demand)
        count = min((len(idle) + 1) // 2, workers - keep)
        retire = tuple(idle[:max(0, count)])
        self.retiring.update(retire)
        return BurstDecision(retire=retire)


def first_wait_max(snap: BurstSnapshot) -> BurstDecision:
    free = snap.base_workers + snap.burst_workers - snap.busy_workers
    if snap.queued_tasks > free:
        return BurstDecision(start=MAX_WORKERS - snap.base_workers - snap.burst_workers)
    return BurstDecision()


# The v2 settings the frontier explores (the defaults first); each value is a trade-off
# described beside its default in procpool/policy/burst.py.
V2_SETTINGS: dict[str, dict[str, float]] = {
    "v2 (defaults)": {},
    "v2 utilisation 1.0": {"target_utilisation": 1.0},
    "v2 utilisation 0.8": {"target_utilisation": 0.8},
    "v2 backlog 0.25 s": {"backlog_seconds": 0.25},
    "v2 backlog 1 s": {"backlog_seconds": 1.0},
    "v2 window 0.2 s": {"rate_window": 0.2},
    "v2 window 0.6 s": {"rate_window": 0.6},
    "v2 tolerance 0": {"tolerance": 0.0},
    "v2 tolerance 0.1": {"tolerance": 0.1},
    "v2 tolerance 0.3": {"tolerance": 0.3},
    "v2 lookahead 0.4 s": {"lookahead": 0.4},
}


def controllers(start: float) -> dict[str, Callable[[], Controller]]:
    made: dict[str, Callable[[], Controller]] = {
        name: (lambda s=settings: v2_controller(start, **s))
        for name, settings in V2_SETTINGS.items()
    }
    made["plain (2 s rate)"] = lambda: PlainRule(start)
    made["plain (0.4 s rate)"] = lambda: PlainRule(start, 0.4)
    made["shipped"] = lambda: Shipped(start)
    made["first-wait-max"] = lambda: first_wait_max
    return made


def frontier(trace_sets: list[dict[str, SimTrace]], start: float, cores: int) -> None:
    """One row per controller: p95 wait and worker-seconds on each trace, scale-event runs.

    With several trace sets (Poisson or jitter seeds) every cell is the median over them,
    and the runs per load change add, in brackets, the most any one set made. The last
    column says which of the targets (on the traces given) a row misses.
    """
    traces = trace_sets[0]
    static = {n: [simulate(t[n], MAX_WORKERS, None, start, cores) for t in trace_sets]
              for n in traces}
    names = [n for n in ("step", "sine", "spike") if n in traces]
    head = " | ".join(f"{n} p95 s | {n} worker-s" for n in names)
    print(f"| controller | {head} | runs per load change | steady events | targets |")
    print("|---|" + "---:|" * (2 * len(names) + 2) + "---|")
    cells = " | ".join(
        f"{statistics.median(o.p95_wait for o in static[n]):.3f} | 1.00x" for n in names)
    print(f"| static-max | {cells} | - | - | - |")
    for label, make in controllers(start).items():
        wait, ratio, runs = {}, {}, {}
        worst_runs = [0.0] * len(trace_sets)  # per trace set, the most runs of any trace
        for n in traces:
            got = [simulate(t[n], BASE_WORKERS, make(), start, cores) for t in trace_sets]
            wait[n] = statistics.median(o.p95_wait for o in got)
            ratio[n] = statistics.median(o.worker_seconds / s.worker_seconds
                                         for o, s in zip(got, static[n], strict=True))
            changes = traces[n].trace.load_changes
            per_set = [o.runs / changes if changes else o.events for o in got]
            runs[n] = statistics.median(per_set)
            if n in names:
                worst_runs = [max(a, b) for a, b in zip(worst_runs, per_set, strict=True)]
        cells = " | ".join(f"{wait[n]:.3f} | {ratio[n]:.2f}x" for n in names)
        worst = max((runs[n] for n in names), default=0.0)
        most = f" ({max(worst_runs):g})" if len(trace_sets) > 1 else ""
        steady = runs.get("steady", 0.0)
        missed = [f"{n} wait" for n in ("step", "sine") if n in wait and wait[n] > P95_WAIT_TARGET]
        missed += [f"{n} worker-s" for n in ("sine", "spike")
                   if n in ratio and ratio[n] > WORKER_SECONDS_TARGET]
        missed += ["runs"] * (worst > RUNS_PER_LOAD_CHANGE) + ["steady"] * bool(steady)
        print(f"| {label} | {cells} | {worst:.1f}{most} | {steady:g} "
              f"| {'missed: ' + ', '.join(missed) if missed else 'met'} |")


def cpu_table(traces: dict[str, SimTrace], start: float, cores: int) -> None:
    """The CPU-bound trace: workers used and task time, with and without the CPU share."""
    sim = traces["cpu"]
    print("| pool | peak workers | p95 execution s | p95 wait s | worker-s | held ticks |")
    print("|---|---:|---:|---:|---:|---:|")
    pools: list[tuple[str, Outcome]] = [
        ("static-base", simulate(sim, BASE_WORKERS, None, start, cores)),
        ("v2 (defaults)", simulate(sim, BASE_WORKERS, v2_controller(start), start, cores)),
        ("v2, no cpu share (gain check only)",
         simulate(sim, BASE_WORKERS, v2_controller(start), start, cores, cpu_info=False)),
        ("plain (2 s rate)", simulate(sim, BASE_WORKERS, PlainRule(start), start, cores)),
        ("shipped", simulate(sim, BASE_WORKERS, Shipped(start), start, cores)),
    ]
    for label, got in pools:
        print(f"| {label} | {got.peak} | {got.p95_execution:.3f} | {got.p95_wait:.3f} "
              f"| {got.worker_seconds:.1f} | {got.held} |")


def detail(traces: dict[str, SimTrace], start: float, cores: int) -> None:
    print("| trace | pool | p95 wait s | worker-s ratio | peak | events (runs) | p95 exec s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, sim in traces.items():
        static = simulate(sim, MAX_WORKERS, None, start, cores)
        for label, make in controllers(start).items():
            got = simulate(sim, BASE_WORKERS, make(), start, cores)
            print(f"| {name} | {label} | {got.p95_wait:.3f} "
                  f"| {got.worker_seconds / static.worker_seconds:.2f} | {got.peak} "
                  f"| {got.events} ({got.runs}) | {got.p95_execution:.3f} |")
        print(f"| {name} | static-max | {static.p95_wait:.3f} | 1.00 | {MAX_WORKERS} | - "
              f"| {static.p95_execution:.3f} |")


def main() -> None:
    global COOLDOWN  # every controller made below reads it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=float, default=0.007,
                        help="seconds to start one worker in a running pool (default 0.007,"
                             " the fork server's, BENCHMARKS.md \"Worker start-up\")")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cooldown", type=float, default=COOLDOWN,
                        help=f"burst_cooldown in seconds (default {COOLDOWN:g}, Config's)")
    parser.add_argument("--traces", nargs="*",
                        default=["steady", "step", "spike", "sine", "cpu"])
    parser.add_argument("--poisson", type=int, nargs="+", metavar="SEED",
                        help="Poisson arrivals of each trace's rate instead of paced ones;"
                             " with several seeds, the frontier shows medians")
    parser.add_argument("--jitter", type=int, nargs="+", metavar="SEED",
                        help="the paced traces with a busy machine's timing noise (ticks at"
                             " a random phase and late, submissions and tasks late; see"
                             " Jitter); with several seeds, the frontier shows medians")
    parser.add_argument("--detail", action="store_true",
                        help="one row per trace and controller instead of the frontier")
    args = parser.parse_args()
    COOLDOWN = args.cooldown
    traces = {n: t for n, t in sim_traces().items() if n in args.traces}
    if args.poisson and args.jitter:
        parser.error("--poisson and --jitter do not combine")
    trace_sets, kind = [traces], "paced"
    if args.poisson:
        trace_sets = [poissonised(traces, seed) for seed in args.poisson]
        kind = f"Poisson (seeds {' '.join(map(str, args.poisson))}; medians)"
    elif args.jitter:
        trace_sets = [jittered(traces, seed) for seed in args.jitter]
        kind = (f"paced, with ticks up to {TICK_JITTER * 1000:g} ms late and submissions "
                f"{ARRIVAL_JITTER * 1000:g} ms (seeds {' '.join(map(str, args.jitter))}; "
                f"medians)")
    print(f"Virtual time; {BASE_WORKERS} base workers bursting to {MAX_WORKERS}, "
          f"{args.cores} cores, worker start-up {args.start} s, ticks every {BURST_INTERVAL} s, "
          f"burst_cooldown {COOLDOWN:g} s, "
          f"{kind} arrivals. Targets: p95 wait <= {P95_WAIT_TARGET} s on step and sine, worker-s "
          f"<= {WORKER_SECONDS_TARGET}x static-max on sine and spike, <= {RUNS_PER_LOAD_CHANGE} "
          f"runs of scale events per load change, no scale event on steady.\n")
    if args.detail:
        detail(trace_sets[0], args.start, args.cores)
        return
    frontier([{n: t for n, t in ts.items() if n != "cpu"} for ts in trace_sets],
             args.start, args.cores)
    if "cpu" in traces:
        seed = (args.poisson or args.jitter or [None])[0]
        print(f"\nCPU-bound trace ({traces['cpu'].trace.description}) on {args.cores} cores"
              f"{'' if seed is None else f', seed {seed}'}:\n")
        cpu_table(trace_sets[0], args.start, args.cores)


if __name__ == "__main__":
    main()

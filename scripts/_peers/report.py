"""The peer benchmark's Markdown report: one table per figure, the ratios of procpool to
multiprocessing.Pool and to the best peer, and procpool's performance targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from _peers.pools import FIGURES, PEERS, WORKLOAD_MODES, label, start_method, workload_modes

PROCPOOLS = ("procpool", "procpool-fork", "procpool-dask")
MP, PPE = "multiprocessing.Pool", "ProcessPoolExecutor"


@dataclass
class Run:
    pools: list[str]
    figures: set[str]
    counts: dict[str, Any]
    reps: int
    command: str
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    machine: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    #: Per rep: {pool: {metric: value}}.
    reps_results: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    serial: list[dict[str, float]] = field(default_factory=list)
    floor: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.derived = False

    def derive(self) -> None:
        """Per-rep figures computed from others: efficiencies, the best workload mode."""
        if self.derived:
            return
        self.derived = True
        for rep, results in enumerate(self.reps_results):
            serial = self.serial[rep] if rep < len(self.serial) else {}
            for pool, r in results.items():
                for key in ("cpu_fresh", "cpu_after_tiny"):
                    wall = r.get(f"{key}_wall_s")
                    if wall and "cpu_s" in serial:
                        r[f"{key}_serial_eff"] = serial["cpu_s"] / 2 / wall
                    if wall and "cpu_ideal_wall_s" in r:
                        r[f"{key}_eff"] = r["cpu_ideal_wall_s"] / wall
                modes = [r[f"workload_{m}_s"] for m in workload_modes(pool)
                         if f"workload_{m}_s" in r]
                if modes:
                    r["workload_best_s"] = min(modes)

    def values(self, pool: str, key: str) -> list[Any]:
        self.derive()
        return [r[pool][key] for r in self.reps_results if key in r.get(pool, {})]

    def median(self, pool: str, key: str) -> float | None:
        found = self.values(pool, key)
        return statistics.median(found) if found else None

    def ran(self) -> list[str]:
        return [p for p in self.pools if p not in self.skipped]

    def as_json(self) -> dict[str, Any]:
        self.derive()
        out = asdict(self)
        out["figures"] = sorted(self.figures)
        out["medians"] = {
            pool: {key: self.median(pool, key) for key in sorted(
                {k for r in self.reps_results for k in r.get(pool, {})
                 if not isinstance(r[pool][k], str)})}
            for pool in self.ran()}
        return out


def _number(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "pct":
        return f"{value:.1%}"
    if kind in ("rate", "us"):
        return f"{value:,.0f}" if kind == "rate" or value >= 100 else f"{value:.1f}"
    if kind == "us2":
        return f"{value:.2f}"
    if kind in ("ms", "mb"):
        return f"{value:,.1f}"
    if kind == "s":
        return f"{value:.3f}"
    if kind == "n":
        return f"{value:g}"
    return f"{value:.2f}"


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    align = ["---"] * left + ["---:"] * (len(head) - left)
    return ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


#: key, what it is, unit, higher is better, number format, figure.
METRICS = [
    ("submit_per_s", "submit one by one", "tasks/s", True, "rate", "submit"),
    ("map_default_per_s", "map, default arguments", "tasks/s", True, "rate", "map"),
    ("map500_per_s", "map, chunksize=500", "tasks/s", True, "rate", "map"),
    ("rtt_p50_us", "round trip p50", "µs", False, "us", "roundtrip"),
    ("rtt_p99_us", "round trip p99", "µs", False, "us", "roundtrip"),
    ("rtt_mean_us", "round trip mean", "µs", False, "us", "roundtrip"),
    ("cpu_fresh_eff", "CPU efficiency, fresh pool", "%", True, "pct", "cpu"),
    ("cpu_after_tiny_eff", "CPU efficiency, after tiny tasks", "%", True, "pct", "cpu"),
    ("cpu_fresh_serial_eff", "CPU efficiency against serial / 2, fresh pool", "%", True, "pct",
     "cpu"),
    ("cpu_after_tiny_serial_eff", "CPU efficiency against serial / 2, after tiny", "%", True,
     "pct", "cpu"),
    ("cpu_fresh_busy", "workers busy with the CPU tasks, fresh pool", "%", True, "pct", "cpu"),
    ("cpu_after_tiny_busy", "workers busy with the CPU tasks, after tiny", "%", True, "pct",
     "cpu"),
    ("gap_median_us", "gap between two tasks on a worker, median", "µs", False, "us", "gap"),
    ("gap_mean_us", "gap between two tasks on a worker, mean", "µs", False, "us", "gap"),
    ("call_p50_us", "one submit call, p50", "µs", False, "us2", "caller"),
    ("call_max_ms", "worst single submit call", "ms", False, "ms", "caller"),
    ("rss_growth_mb", "caller RSS growth, tasks queued", "MB", False, "mb", "memory"),
    ("first_result_ms", "constructor → first result", "ms", False, "ms", "lifecycle"),
    ("idle_stop_ms", "idle stop", "ms", False, "ms", "lifecycle"),
    ("workload_best_s", "real workload, best mode", "s", False, "s", "workload"),
]
_METRIC = {m[0]: m for m in METRICS}

#: The targets: what, metric, against (best / mp / ppe / floor / own_p50 / abs),
#: comparison, bound.
TARGETS = [
    ("round trip p50 ≤ 0.6x the best peer's", "rtt_p50_us", "best", "<=", 0.6),
    ("round trip p50 ≤ 1.3x the physical floor", "rtt_p50_us", "floor", "<=", 1.3),
    ("round trip p99 ≤ 3x its own p50", "rtt_p99_us", "own_p50", "<=", 3.0),
    ("submit one by one ≥ 3x multiprocessing.Pool's apply_async", "submit_per_s", "mp",
     ">=", 3.0),
    ("map, default arguments, within 1.5x the fastest peer's default map",
     "map_default_per_s", "best", ">=", 1 / 1.5),
    ("map chunksize=500 within 1.2x the best peer", "map500_per_s", "best", ">=", 1 / 1.2),
    # The ideal: the tasks as they ran (their own times in the workers, summed, / 2); a
    # wall held against loops run elsewhere also measures where the loop ran (see render).
    ("CPU efficiency ≥ 98% of ideal (workers busy), fresh pool", "cpu_fresh_busy", "abs",
     ">=", 0.98),
    ("CPU efficiency ≥ 98% of ideal (workers busy), after tiny tasks", "cpu_after_tiny_busy",
     "abs", ">=", 0.98),
    ("caller memory < 100 MB for 100,000 queued tasks", "rss_growth_mb", "abs", "<", 100.0),
    ("one submit call ≤ 5 µs median", "call_p50_us", "abs", "<=", 5.0),
    ("worst single submit call < 2 ms", "call_max_ms", "abs", "<", 2.0),
    ("real workload within 1.05x the best peer's best mode", "workload_best_s", "best", "<=",
     1.05),
    ("gap between two tasks ≤ multiprocessing.Pool's, median", "gap_median_us", "mp", "<=", 1.0),
    ("gap between two tasks ≤ multiprocessing.Pool's, mean", "gap_mean_us", "mp", "<=", 1.0),
    ("idle stop < 50 ms", "idle_stop_ms", "abs", "<", 50.0),
    ("constructor → first result ≤ ProcessPoolExecutor's", "first_result_ms", "ppe", "<=",
     1.0),
]


def best_peer(run: Run, key: str, rep: int | None = None) -> tuple[str, float] | None:
    """The best peer for ``key`` by median (or in one rep), and its value."""
    higher = _METRIC[key][3]
    found = []
    for pool in PEERS:
        if rep is None:
            value = run.median(pool, key)
        else:
            value = run.reps_results[rep].get(pool, {}).get(key) if rep < len(
                run.reps_results) else None
        if value is not None:
            found.append((pool, value))
    if not found:
        return None
    return (max if higher else min)(found, key=lambda item: item[1])


def _ratio(run: Run, pool: str, key: str, against: Callable[[int | None], float | None]) -> str:
    """Ratio of medians, then (min-max) of the per-rep ratios."""
    mine, theirs = run.median(pool, key), against(None)
    if mine is None or not theirs:
        return "—"
    per_rep = []
    for rep, results in enumerate(run.reps_results):
        value, other = results.get(pool, {}).get(key), against(rep)
        if value is not None and other:
            per_rep.append(value / other)
    spread = f" ({min(per_rep):.2f}-{max(per_rep):.2f})" if len(per_rep) > 1 else ""
    return f"{mine / theirs:.2f}{spread}"


def _reference(run: Run, key: str, against: str, pool: str) -> Callable[[int | None], Any]:
    def ref(rep: int | None) -> float | None:
        if against == "best":
            found = best_peer(run, key, rep)
            return found[1] if found else None
        if against in ("mp", "ppe"):
            other = MP if against == "mp" else PPE
            if rep is None:
                return run.median(other, key)
            return run.reps_results[rep].get(other, {}).get(key)
        if against == "floor":
            floors = [f["p50_us"] for f in run.floor if "p50_us" in f]
            if rep is None:
                return statistics.median(floors) if floors else None
            return run.floor[rep].get("p50_us") if rep < len(run.floor) else None
        if against == "own_p50":
            if rep is None:
                return run.median(pool, "rtt_p50_us")
            return run.reps_results[rep].get(pool, {}).get("rtt_p50_us")
        return 1.0

    return ref


def _verdict(run: Run, pool: str, target: tuple[str, str, str, str, float]) -> str:
    _, key, against, compare, bound = target
    mine, ref = run.median(pool, key), _reference(run, key, against, pool)(None)
    if mine is None or not ref:
        return "—"
    value = mine / ref
    met = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[compare]
    shown = (_number(mine, _METRIC[key][4]) + " " + _METRIC[key][2]).replace(" %", "") \
        if against == "abs" else f"{value:.2f}x"
    return f"{'met' if met else '**missed**'} ({shown})"


def _bool(values: list[Any]) -> str:
    if not values:
        return "—"
    held = sum(bool(v) for v in values)
    return "yes" if held == len(values) else f"no ({held} of {len(values)})"


def _cell(run: Run, pool: str, key: str, kind: str) -> str:
    return _number(run.median(pool, key), kind)


def render(run: Run) -> str:
    run.derive()
    c, ran = run.counts, run.ran()
    files = "every `.py` file" if c["files"] is None else f"the first {c['files']} `.py` files"
    lines = [f"`{run.command}`", ""]
    load = "/".join(f"{x:.2f}" for x in run.load_start)
    lines.append(f"- Machine: {run.machine}. Load average (1/5/15 min) at the start {load},"
                 f" at the end {'/'.join(f'{x:.2f}' for x in run.load_end)}; the run took"
                 f" {run.seconds / 60:.1f} min.")
    lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in run.versions.items()) + ".")
    shown = [f"{label(p)} `{start_method(p)}`" for p in ran]
    lines.append("- 2 workers everywhere; each figure group runs each pool in a fresh"
                 f" interpreter, pools in rotating order; medians of {run.reps}"
                 f" rep{'s' if run.reps != 1 else ''}."
                 + (f" Start methods: {', '.join(shown)}." if shown else ""))
    counts = {
        "submit": f"{c['tiny']:,} no-op tasks submitted one by one",
        "map": f"{c['tiny']:,} through `map`",
        "roundtrip": f"{c['round_trips']:,} round trips",
        "cpu": f"{c['cpu_tasks']} CPU tasks of ~{c['cpu_ms']:g} ms (spin count"
               f" {c.get('spin_n', '-')}, calibrated here), after {c['cpu_tiny']:,} tiny ones",
        "gap": f"{c['gap_tasks']} tasks of {c['gap_ms']:g} ms for the gap",
        "caller": f"{c['caller_tasks']:,} timed submit calls",
        "memory": f"{c['memory_tasks']:,} queued tasks for memory",
        "lifecycle": f"{c['idle_s']:g} s idle before the stop",
        "workload": f"{files} of the standard library for the workload",
    }
    lines.append("- Counts: " + "; ".join(v for k, v in counts.items() if k in run.figures)
                 + ".")
    for pool, reason in run.skipped.items():
        lines.append(f"- Skipped: {label(pool)} ({reason}).")
    for failure in run.failures:
        lines.append(f"- Failed: {failure}.")
    lines.append("")
    f = run.figures
    if f & {"submit", "map"}:
        lines += ["### Tiny tasks: submitted one by one, and `map`", ""]
        rows = []
        for p in ran:
            sizes = run.values(p, "map_default_chunksize")
            rows.append([label(p), _cell(run, p, "submit_per_s", "rate"),
                         sizes[0] if sizes else "—", _cell(run, p, "map_default_per_s", "rate"),
                         _cell(run, p, "map500_per_s", "rate")])
        lines += _table(["pool", "submit one by one, tasks/s", "map default: chunksize",
                         "tasks/s", "map chunksize=500, tasks/s"], rows)
    if "roundtrip" in f:
        lines += ["### Sequential round trips (submit one, wait for it)", "",
                  "The physical floor: a pipe round trip to a forked echo process (a small"
                  " pickled message each way) plus one reader-thread hop to a"
                  " `concurrent.futures.Future`, measured in the same run.", ""]
        rows = [[label(p)] + [_cell(run, p, f"rtt_{k}", "us") for k in ("p50_us", "p99_us",
                                                                          "mean_us")]
                for p in ran]
        floors = {k: [x[k] for x in run.floor if k in x] for k in ("p50_us", "p99_us",
                                                                    "mean_us")}
        rows.append(["physical floor"] + [_number(statistics.median(v) if v else None, "us")
                                          for v in floors.values()])
        lines += _table(["pool", "p50 µs", "p99 µs", "mean µs"], rows)
    if "cpu" in f:
        cpu = [s["cpu_s"] for s in run.serial if "cpu_s" in s]
        serial_cpu = statistics.median(cpu) if cpu else None
        lines += ["### CPU efficiency", "",
                  f"{c['cpu_tasks']} tasks of a ~{c['cpu_ms']:g} ms pure-Python loop submitted"
                  " one by one, on a fresh pool (both workers seen up first) and on another"
                  f" right after {c['cpu_tiny']:,} tiny tasks. Efficiency = ideal / wall, the"
                  " ideal being the wall time of the same loops split over two processes"
                  " forked, no pool between, from the interpreter the pool then runs in:"
                  " forked, they share its memory layout as forked workers do, and that"
                  " layout alone moves the loop's speed by up to ~15% from one interpreter"
                  " to the next (what ran before it in the same process moves it too)."
                  " \"Of serial / 2\" holds the wall against half the serial CPU time"
                  f" measured in the parent ({_number(serial_cpu, 's')} s). Busy = the tasks'"
                  " own run times in the workers, summed, / (2 x wall): the share of the"
                  " wall time the pool left its workers running tasks, whatever the loop's"
                  " speed there; the targets hold this one, the pool's own cost.", ""]
        rows = [[label(p), _cell(run, p, "cpu_ideal_wall_s", "s")]
                + [_cell(run, p, f"{key}{metric}", "s" if metric == "_wall_s" else "pct")
                   for key in ("cpu_fresh", "cpu_after_tiny")
                   for metric in ("_wall_s", "_eff", "_serial_eff", "_busy")]
                + [_bool(run.values(p, "both_up"))] for p in ran]
        lines += _table(["pool", "ideal s", "fresh: wall s", "efficiency", "of serial / 2",
                         "busy", "after tiny: wall s", "efficiency", "of serial / 2", "busy",
                         "both workers up"], rows)
    if "gap" in f:
        lines += ["### Gap between two tasks on one worker", "",
                  f"{c['gap_tasks']} busy tasks of {c['gap_ms']:g} ms submitted at once; per"
                  " worker, from one task's end to the next one's start. The mean is what"
                  " a worker loses per task (the median hides a long tail).", ""]
        rows = [[label(p), _cell(run, p, "gap_median_us", "us"),
                 _cell(run, p, "gap_mean_us", "us"), _cell(run, p, "gap_p90_us", "us")]
                for p in ran]
        lines += _table(["pool", "median µs", "mean µs", "p90 µs"], rows)
    if "caller" in f:
        lines += ["### What one submit call costs the caller", "",
                  f"Each of {c['caller_tasks']:,} `queue_task` / `submit` / `apply_async` /"
                  " `schedule` calls of a no-op timed alone while the pool runs them; then"
                  " every result collected. Full collections: the cyclic collector's"
                  " generation-2 runs during the loop.", ""]
        rows = [[label(p), _cell(run, p, "call_p50_us", "us2"),
                 _cell(run, p, "call_p99_us", "us2"), _cell(run, p, "call_max_ms", "ms"),
                 _cell(run, p, "call_loop_s", "s"), _cell(run, p, "call_full_gcs", "n")]
                for p in ran]
        lines += _table(["pool", "p50 µs", "p99 µs", "worst ms", "loop s", "full collections"],
                        rows)
    if "memory" in f:
        lines += ["### Caller memory with tasks queued", "",
                  "Both workers held on a gate (a task waiting for a file), then"
                  f" {c['memory_tasks']:,} no-op tasks submitted; the caller's RSS growth over"
                  " the loop (MB = 10^6 bytes), then the pool is killed.", ""]
        rows = [[label(p), _cell(run, p, "rss_growth_mb", "mb"),
                 _cell(run, p, "rss_bytes_per_task", "rate"), _cell(run, p, "memory_loop_s", "s"),
                 _bool(run.values(p, "memory_blocked"))] for p in ran]
        lines += _table(["pool", "RSS growth MB", "bytes per task", "submit loop s",
                         "both workers held"], rows)
    if "lifecycle" in f:
        lines += ["### Lifecycle", "",
                  "Constructor to the first result of a no-op, the first pool of a fresh"
                  " interpreter (the constructor alone in brackets); the graceful stop"
                  f" (`stop()`, `shutdown()`, `close(); join()`) after {c['idle_s']:g} s idle.",
                  ""]
        rows = [[label(p), f"{_cell(run, p, 'first_result_ms', 'ms')}"
                 f" ({_cell(run, p, 'ctor_ms', 'ms')})", _cell(run, p, "idle_stop_ms", "ms")]
                for p in ran]
        lines += _table(["pool", "constructor → first result ms", "idle stop ms"], rows)
    if "workload" in f:
        lines += _workload(run)
    lines += _ratios(run)
    return "\n".join(lines).rstrip() + "\n"


def _workload(run: Run) -> list[str]:
    serial = [s["workload_s"] for s in run.serial if "workload_s" in s]
    expected = {s["workload_score"] for s in run.serial if "workload_score" in s}
    files = [s["workload_files"] for s in run.serial if "workload_files" in s]
    lines = ["### Real workload: score the standard library's syntax trees", "",
             f"`ast`-parse {files[0] if files else '—':,} `.py` files of the running Python's"
             " standard library and sum a weight per node from a table each worker builds"
             " once (~50 ms: procpool's `on_create`, the peers' `initializer`); seconds on a"
             " pool whose workers both built it. Serial, in the parent:"
             f" {_number(statistics.median(serial) if serial else None, 's')} s.", ""]
    rows = []
    for p in run.ran():
        modes = {m: run.median(p, f"workload_{m}_s") for m in workload_modes(p)}
        timed = {m: v for m, v in modes.items() if v is not None}
        best = min(timed, key=lambda m: timed[m]) if timed else None
        scores = {s for m in modes for s in run.values(p, f"workload_{m}_score")}
        check = "—" if not scores else "same as serial" if scores == expected else "**DIFFERS**"
        rows.append([label(p), *(_number(modes.get(m), "s") for m in WORKLOAD_MODES),
                     WORKLOAD_MODES[best] if best else "—", check])
    lines += _table(["pool", *(f"{name} s" for name in WORKLOAD_MODES.values()), "best mode",
                     "total score"], rows)
    return lines


def _ratios(run: Run) -> list[str]:
    mine = [p for p in PROCPOOLS if p in run.ran()]
    metrics = [m for m in METRICS if m[5] in run.figures]
    if not mine or not metrics:
        return []
    lines = ["### procpool ÷ multiprocessing.Pool and ÷ the best peer", "",
             "Ratio of the medians, in the figure's own unit (for tasks/s and % above 1 is"
             " better for procpool, for µs, ms, MB and s below 1); in brackets the spread of"
             " the per-rep ratios.", ""]
    rows = []
    for key, what, unit, higher, kind, _ in metrics:
        best = best_peer(run, key)
        row = [what, unit, "higher" if higher else "lower",
               *(_cell(run, p, key, kind) for p in mine), _cell(run, MP, key, kind),
               f"{label(best[0])} ({_number(best[1], kind)})" if best else "—"]
        for p in mine:
            row += [_ratio(run, p, key, _reference(run, key, "mp", p)),
                    _ratio(run, p, key, _reference(run, key, "best", p))]
        rows.append(row)
    head = ["figure", "unit", "better", *(label(p) for p in mine), "mp.Pool", "best peer"]
    for p in mine:
        head += [f"{label(p)} ÷ mp.Pool", f"{label(p)} ÷ best peer"]
    lines += _table(head, rows, left=3)
    lines += ["### The targets", ""]
    rows = [[t[0], *(_verdict(run, p, t) for p in mine)] for t in TARGETS
            if _METRIC[t[1]][5] in run.figures]
    lines += _table(["target", *(label(p) for p in mine)], rows)
    return lines


assert {m[5] for m in METRICS} <= set(FIGURES)

"""``procpool-demo``: watch a pool of resource-owning workers burst under a simulated load.

This module reads the arguments and runs the pieces of :mod:`procpool.demo`
together: a :class:`~procpool.TaskManager` whose workers build a lookup table
in ``on_create``, a feeder thread submitting CPU-bound tasks along a load
pattern, and a view refreshed every :data:`TICK_SECONDS`.

Exit codes: 0 after a full run, 2 for bad arguments (among them a ``--plot``
file that is not .png, .svg or .pdf, and ``--plot`` without matplotlib:
both refused before the run), 1 if the pool cannot start, and 128 + the signal number after
Ctrl-C (SIGINT) or SIGTERM, which stop the run early but cleanly: queued
tasks are cancelled, running ones finish, every worker leaves and the
summary is printed. A second Ctrl-C kills the workers at once.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from time import monotonic
from types import FrameType, TracebackType
from typing import Any

from procpool._extras import install_hint
from procpool.config import Config
from procpool.demo import plot
from procpool.demo.feeder import Feeder, Load
from procpool.demo.patterns import PATTERNS
from procpool.demo.record import Recorder, Tick
from procpool.demo.view import RunInfo, choose_view
from procpool.demo.workload import build_table
from procpool.errors import ProcPoolError
from procpool.manager import TaskManager
from procpool.procstats import write_json_atomic

#: Seconds between two refreshes of the view (and of ``--dump-stats``).
TICK_SECONDS = 0.25

#: How long the graceful stop at the end may take before the workers are killed.
STOP_TIMEOUT_SECONDS = 15.0

#: Seconds of history behind the pool's rates: shorter than the library's default
#: so that the view, and the burst decisions, follow a short run's spikes closely.
METRICS_WINDOW_SECONDS = 1.0

#: Default upper bound of base + burst workers (raised to ``--workers`` if that is more).
DEFAULT_MAX_WORKERS = 6


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = check_args(args)
    if problem:
        parser.error(problem)  # exits with code 2
    if args.plot is not None:
        missing = plot.check()
        if missing:
            parser.exit(2, f"{parser.prog}: error: {missing}\n")
    try:
        return run(args)
    except BrokenPipeError:  # e.g. "procpool-demo --json | head": the reader left
        # The pool was stopped on the way out; keep the interpreter from failing
        # again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procpool-demo",
        description=(
            "Run a procpool TaskManager on this machine under a simulated load and watch it"
            " start burst workers when tasks arrive faster than they complete, and let them"
            " go when it is quiet again. Each worker builds a lookup table once (on_create);"
            " each task spins on the CPU for about --task-ms."
        ),
        epilog=(
            "When the time is up, or at Ctrl-C, tasks still queued are cancelled (\"not"
            " started\"), running ones finish, every worker leaves and a summary is printed;"
            " a second Ctrl-C kills the workers at once. Exit code 130 after Ctrl-C."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print procpool's version and exit")
    pool = parser.add_argument_group("the pool")
    pool.add_argument("--workers", type=_count, default=2, metavar="N",
                      help="base workers, always running (default %(default)s)")
    pool.add_argument("--max-workers", type=_count, default=None, metavar="N",
                      help=f"most base + burst workers (default {DEFAULT_MAX_WORKERS},"
                           " or --workers if more)")
    pool.add_argument("--burst-interval", type=_seconds(allow_zero=True), default=0.2,
                      metavar="SECONDS", help="seconds between burst decisions; 0 turns"
                                              " bursting off (default %(default)s)")
    pool.add_argument("--cooldown", type=_seconds(allow_zero=True), default=1.0,
                      metavar="SECONDS",
                      help="quiet time (no queued task) before idle burst workers leave"
                           " (default %(default)s)")
    pool.add_argument("--create-ms", type=_milliseconds, default=500.0, metavar="MS",
                      help="time each worker's on_create takes to build its resource"
                           " (default %(default)s)")
    load = parser.add_argument_group("the load")
    load.add_argument("--pattern", choices=sorted(PATTERNS), default="spike",
                      help="how the arrival rate changes: spike (two spikes with a quiet spell"
                           " between), step (a staircase up and down), sine (two waves),"
                           " steady (default %(default)s)")
    load.add_argument("--rate", type=_rate, default=80.0, metavar="TASKS_PER_S",
                      help="arrival rate at the pattern's peak (default %(default)s)")
    load.add_argument("--task-ms", type=_milliseconds, default=50.0, metavar="MS",
                      help="mean CPU time of a task, each 0.5x to 1.5x this"
                           " (default %(default)s)")
    load.add_argument("--duration", type=_seconds(), default=15.0, metavar="SECONDS",
                      help="how long tasks keep arriving (default %(default)s)")
    load.add_argument("--fail-rate", type=_share, default=0.0, metavar="SHARE",
                      help="share of tasks (0 to 1) that raise an exception"
                           " (default %(default)s)")
    load.add_argument("--crash-rate", type=_share, default=0.0, metavar="SHARE",
                      help="share of tasks (0 to 1) that end their worker with os._exit"
                           " (default %(default)s)")
    load.add_argument("--priority-share", type=_share, default=0.1, metavar="SHARE",
                      help="share of tasks (0 to 1) queued with priority"
                           " (default %(default)s)")
    load.add_argument("--seed", type=int, default=None,
                      help="seed of every random choice, for a repeatable load"
                           " (default: a new one each run)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true",
                     help="print one JSON object per tick and a summary object at the end,"
                          " instead of the live view")
    out.add_argument("--plot", metavar="FILE.png", default=None,
                     help="draw workers, queue and rates over the run into this"
                          f" {', '.join(plot.FORMATS[:-1])} or {plot.FORMATS[-1]} file;"
                          f" needs matplotlib: {install_hint('plot')}")
    out.add_argument("--dump-stats", metavar="PATH", default=None,
                     help="write TaskManager.dump_stats() as JSON to PATH at every tick"
                          " (atomically replaced)")
    return parser


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of arguments, or None."""
    if args.max_workers is None:
        args.max_workers = max(DEFAULT_MAX_WORKERS, args.workers)
    if args.max_workers < args.workers:
        return (f"--max-workers ({args.max_workers}) must be at least --workers"
                f" ({args.workers})")
    if args.fail_rate + args.crash_rate > 1:
        return "--fail-rate and --crash-rate must add up to at most 1"
    if args.plot is not None:
        problem = plot.check_format(args.plot)
        if problem:
            return problem
    for flag, path in (("--plot", args.plot), ("--dump-stats", args.dump_stats)):
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            return f"{flag}: cannot write into the folder {folder!r}"
    return None


def version() -> str:
    """procpool's version, as installed (``procpool.__version__`` in a bare source tree)."""
    try:
        return importlib.metadata.version("procpool")
    except importlib.metadata.PackageNotFoundError:
        from procpool import __version__

        return __version__


def run(args: argparse.Namespace) -> int:
    info = RunInfo(args.pattern, args.duration, args.rate, args.task_ms, args.workers,
                   args.max_workers)
    load = Load(PATTERNS[args.pattern], args.duration, args.rate, args.task_ms / 1000,
                fail_rate=args.fail_rate, crash_rate=args.crash_rate,
                priority_share=args.priority_share, seed=args.seed)
    config = Config(
        on_create=partial(build_table, args.create_ms),
        worker_count=args.workers,
        max_worker_count=args.max_workers,
        burst_interval=args.burst_interval,
        burst_cooldown=args.cooldown,
        resource_pool_size=0,  # the demo never calls run_task
        metrics_window=METRICS_WINDOW_SECONDS,
    )
    view = choose_view(info, json_lines=args.json)
    recorder = Recorder()
    with _Signals() as signals:
        view.start()
        try:
            manager: TaskManager[Any] = TaskManager(config)
        except ProcPoolError as exc:
            view.close()
            print(f"procpool-demo: the pool could not start: {exc}", file=sys.stderr)
            return 1
        feeder = Feeder(manager, load)
        started = monotonic()
        try:
            feeder.start(started)
            _watch(manager, feeder, load, recorder, view.update, signals, started,
                   args.dump_stats)
            feeder.stop()
            feeder.cancel_pending()
            manager.stop(STOP_TIMEOUT_SECONDS)
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            feeder.stop()
            manager.kill()
        except BaseException:
            feeder.stop()
            manager.kill()
            view.close()
            raise
        elapsed = monotonic() - started
    summary = recorder.summary(elapsed=elapsed, counts=feeder.counts(),
                               interrupted=signals.received is not None)
    code = 0 if signals.received is None else 128 + signals.received
    summary["plot"] = summary["stats_file"] = None
    if args.plot is not None and recorder.ticks:
        try:
            plot.save(args.plot, recorder.ticks, info)
            summary["plot"] = args.plot
        except (OSError, ValueError) as exc:
            print(f"procpool-demo: could not write the plot {args.plot!r}: {exc}",
                  file=sys.stderr)
            code = code or 1
    if args.dump_stats is not None and recorder.ticks:
        summary["stats_file"] = args.dump_stats
    view.finish(summary)
    return code


def _watch(
    manager: TaskManager[Any], feeder: Feeder, load: Load, recorder: Recorder,
    show: Callable[[Tick], None], signals: _Signals, started: float, dump_path: str | None,
) -> None:
    """Take a tick every TICK_SECONDS until the load ends or a signal arrives."""
    end = started + load.duration
    next_tick = started
    while True:
        t = monotonic() - started
        dump = manager.dump_stats()
        tick = Tick.build(t, load.rate_at(t), dump, feeder.counts())
        recorder.add(tick)
        show(tick)
        if dump_path is not None:
            write_json_atomic(dump_path, dump)
        if t >= load.duration or signals.received is not None:
            return
        next_tick += TICK_SECONDS
        time.sleep(max(0.0, min(next_tick, end) - monotonic()))
        # A signal handler runs during the sleep, which then goes on to its end:
        # at most one tick late.


class _Signals:
    """While active, SIGINT and SIGTERM ask the run to stop; a second one interrupts.

    Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process
    group), so only this process decides what happens.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum


# -- argument types: argparse reports their ArgumentTypeError and exits with code 2 --


def _number(text: str, kind: Callable[[str], float], what: str,
            ok: Callable[[float], bool]) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _count(text: str) -> int:
    return int(_number(text, int, "a whole number >= 1", lambda v: v >= 1))


def _rate(text: str) -> float:
    return _number(text, float, "a number of tasks per second > 0", lambda v: v > 0)


def _milliseconds(text: str) -> float:
    return _number(text, float, "a number of milliseconds >= 0", lambda v: v >= 0)


def _share(text: str) -> float:
    return _number(text, float, "a share between 0 and 1", lambda v: 0 <= v <= 1)


def _seconds(allow_zero: bool = False) -> Callable[[str], float]:
    if allow_zero:
        return lambda text: _number(text, float, "a number of seconds >= 0", lambda v: v >= 0)
    return lambda text: _number(text, float, "a number of seconds > 0", lambda v: v > 0)

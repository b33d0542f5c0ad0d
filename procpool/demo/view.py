"""How the demo shows each tick: a live rich screen, plain lines, or JSON lines.

All three have the same calls: ``start()`` once before the pool starts,
``update(tick)`` per tick, ``finish(summary)`` at the end, and ``close()``
to give the terminal back without a summary (when the run fails).
rich is imported only by :class:`LiveView`, which :func:`choose_view` picks
only for a terminal with rich installed (``pip install "procpool[demo]"``); in
a terminal without rich, one line on stderr says so and plain lines follow.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from procpool._extras import install_hint
from procpool.demo.record import Tick
from procpool.supervisor.bursting import usable_cores

#: Ticks of history behind the sparklines of the live view.
HISTORY = 24

_BARS = "▁▂▃▄▅▆▇█"
_ROLE_STYLE = {"supervisor": "magenta", "base": "cyan", "burst": "yellow", "reserved": "blue",
               "temporary": "blue"}
_STATE_STYLE = {"busy": "green", "idle": "dim", "starting": "yellow", "leaving": "red"}


@dataclass(frozen=True)
class RunInfo:
    """The run's settings, for headers."""

    pattern: str
    duration: float
    peak_rate: float
    task_ms: float
    workers: int
    max_workers: int

    def header(self) -> str:
        plural = "s" if self.workers > 1 else ""
        return (f"procpool demo: {self.pattern} load up to {self.peak_rate:g} tasks/s of"
                f" ~{self.task_ms:g} ms CPU each, for {self.duration:g} s;"
                f" {self.workers} base worker{plural}, up to {self.max_workers} in all")


class View(Protocol):
    def start(self) -> None: ...
    def update(self, tick: Tick) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def choose_view(info: RunInfo, *, json_lines: bool, out: TextIO | None = None,
                err: TextIO | None = None) -> View:
    """JSON lines if asked; the live view on a terminal with rich; else plain lines.

    A terminal without rich gets plain lines too, after one line on ``err``
    (default stderr) that says why and how to install rich.
    """
    out = out or sys.stdout
    if json_lines:
        return JsonView(out)
    if out.isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            err = err or sys.stderr
            err.write("procpool-demo: the live view needs rich, showing plain lines instead;"
                      f" install it with: {install_hint('demo')}\n")
            err.flush()
        else:
            return LiveView(info, out)
    return PlainView(info, out)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    s = summary
    how = "stopped by a signal" if s["interrupted"] else "finished"
    return [
        f"procpool demo {how} after {s['duration_seconds']:.1f} s",
        f"  tasks  {s['tasks_submitted']} submitted, {s['tasks_completed']} completed,"
        f" {s['tasks_failed']} failed, {s['tasks_crashed']} crashed,"
        f" {s['tasks_cancelled']} not started",
        f"  burst  up to {s['max_burst_workers']} burst workers at once;"
        f" {s['burst_workers_started']} started, {s['burst_workers_stopped']} left",
        *([f"         held: the tasks were CPU-bound (cpu share {s['cpu_share']:.2f}), and"
           f" more busy workers than the {usable_cores()} cores add no throughput"]
          if (s.get("cpu_share") or 0) > 0.8 and not s["burst_workers_started"] else []),
        f"  queue  up to {s['max_queued_tasks']} tasks waiting;"
        f" p95 execution time {s['p95_ms']:.0f} ms",
        *([f"  plot   {s['plot']}"] if s.get("plot") else []),
        *([f"  stats  {s['stats_file']} (dump_stats() of the last tick)"]
          if s.get("stats_file") else []),
    ]


class JsonView:
    """One JSON object per tick, then the summary object: for scripts."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def start(self) -> None:
        pass

    def update(self, tick: Tick) -> None:
        self._write(tick.to_json())

    def finish(self, summary: dict[str, Any]) -> None:
        self._write(summary)

    def close(self) -> None:
        pass

    def _write(self, data: dict[str, Any]) -> None:
        self._out.write(json.dumps(data, separators=(",", ":")) + "\n")
        self._out.flush()


class PlainView:
    """One line per tick, for logs and pipes."""

    def __init__(self, info: RunInfo, out: TextIO) -> None:
        self._info = info
        self._out = out

    def start(self) -> None:
        self._print(self._info.header())

    def update(self, tick: Tick) -> None:
        self._print(plain_line(tick))

    def finish(self, summary: dict[str, Any]) -> None:
        for line in summary_lines(summary):
            self._print(line)

    def close(self) -> None:
        pass

    def _print(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plain_line(tick: Tick) -> str:
    c = tick.counts
    return (
        f"{tick.t:5.1f}s target {tick.target_rate:5.1f}/s | workers base {tick.base_workers}"
        f" burst {tick.burst_workers} busy {tick.busy_workers} starting {tick.starting_workers}"
        f" | queued {tick.queued_tasks} priority {tick.priority_tasks}"
        f" | in {tick.arrival_rate:5.1f}/s out {tick.completion_rate:5.1f}/s"
        f" | p95 {tick.p95_ms:4.0f} ms | cpu {_share(tick.cpu_share)}"
        f" | done {c.completed} failed {c.failed}"
        f" crashed {c.crashed}"
    )


class LiveView:
    """A rich screen redrawn every tick: the pool, sparklines and one row per process.

    Only the run's header is printed for good; the hints (the pool is
    starting, what Ctrl-C does) live in the redrawn area, so the first tick
    replaces the "starting" one, and the frame left on screen at the end has
    none.
    """

    def __init__(self, info: RunInfo, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._info = info
        self._console = Console(file=out)
        self._live = Live(console=self._console, auto_refresh=False, transient=False)
        self._history: dict[str, deque[float]] = {
            name: deque(maxlen=HISTORY) for name in ("workers", "queue", "arrival", "completion")
        }
        self._last: Tick | None = None

    def start(self) -> None:
        from rich.text import Text

        self._console.print(f"[bold]{self._info.header()}[/]")
        self._live.start()
        self._live.update(Text("starting the base workers... Ctrl-C stops the demo", "dim"),
                          refresh=True)

    def update(self, tick: Tick) -> None:
        self._last = tick
        history = self._history
        history["workers"].append(tick.base_workers + tick.burst_workers)
        history["queue"].append(tick.queued_tasks + tick.priority_tasks)
        history["arrival"].append(tick.arrival_rate)
        history["completion"].append(tick.completion_rate)
        self._live.update(render(tick, self._info, history), refresh=True)

    def finish(self, summary: dict[str, Any]) -> None:
        self.close()
        for line in summary_lines(summary):
            self._console.print(line, highlight=False)

    def close(self) -> None:
        if not self._live.is_started:
            return
        from rich.text import Text

        # The last frame stays on screen, without the hints: they no longer apply.
        # Before any tick there is only the "starting" hint: erase it.
        last = self._last
        if last is None:
            self._live.transient = True
            self._live.update(Text(), refresh=True)
        else:
            self._live.update(render(last, self._info, self._history, hints=False),
                              refresh=True)
        self._live.stop()


def render(tick: Tick, info: RunInfo, history: dict[str, deque[float]], *,
           hints: bool = True) -> Any:
    """The live screen for one tick (a rich renderable), with the Ctrl-C hint if ``hints``.

    One panel as wide as its contents (at most 80 columns with the default
    settings), however wide the terminal.
    """
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    c = tick.counts
    top_rate = max([info.peak_rate, *history["arrival"], *history["completion"]])
    pool = Table.grid(padding=(0, 2))
    pool.add_column(style="bold")
    pool.add_column()
    pool.add_column()
    pool.add_row(
        "workers", worker_bar(tick, info.max_workers),
        Text.assemble(
            ("base ", "dim"), (str(tick.base_workers), "cyan"),
            ("  burst ", "dim"), (str(tick.burst_workers), "bold yellow"),
            ("  busy ", "dim"), (str(tick.busy_workers), "green"),
            ("  starting ", "dim"), str(tick.starting_workers),
        ),
    )
    pool.add_row(
        "queued", Text(sparkline(history["queue"], max([1.0, *history["queue"]])), "blue"),
        Text.assemble(str(tick.queued_tasks), (" normal  ", "dim"),
                      str(tick.priority_tasks), (" priority", "dim")),
    )
    pool.add_row(
        "arrivals", Text(sparkline(history["arrival"], top_rate), "magenta"),
        Text.assemble(f"{tick.arrival_rate:6.1f}/s", (f"  target {tick.target_rate:.0f}/s", "dim")),
    )
    pool.add_row(
        "completions", Text(sparkline(history["completion"], top_rate), "green"),
        f"{tick.completion_rate:6.1f}/s",
    )
    pool.add_row("p95 time", "", f"{tick.p95_ms:6.0f} ms")
    pool.add_row("cpu share", Text("1: CPU-bound", "dim"),
                 f"{_share(tick.cpu_share):>9}")
    pool.add_row(
        "tasks", Text.assemble(str(c.submitted), (" submitted", "dim"), justify="right"),
        Text.assemble(str(c.completed), (" done  ", "dim"), (str(c.failed), "red"),
                      (" failed  ", "dim"), (str(c.crashed), "red"), (" crashed", "dim")),
    )
    processes = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False, show_edge=False)
    processes.add_column("pid", justify="right")
    processes.add_column("role")
    processes.add_column("state")
    for name in ("CPU %", "RSS MiB", "tasks", "uptime"):
        processes.add_column(name, justify="right")
    for p in tick.processes:
        processes.add_row(
            str(p["pid"] or "-"),
            Text(p["role"], _ROLE_STYLE.get(p["role"], "")),
            Text(p["state"], _STATE_STYLE.get(p["state"], "")),
            "-" if p["cpu_percent"] is None else f"{p['cpu_percent']:.0f}",
            "-" if p["rss_bytes"] is None else f"{p['rss_bytes'] / 2**20:.0f}",
            # Only workers run tasks: the supervisor's tasks_done is the pool's total,
            # which the panel shows already.
            "-" if p["worker_id"] is None else str(p["tasks_done"]),
            f"{p['uptime_seconds']:.1f}s",
        )
    progress = min(tick.t / info.duration, 1.0)
    title = Text.assemble(
        ("procpool demo", "bold cyan"), f"  {info.pattern}  ",
        (f"{tick.t:5.1f}", "bold"), f" / {info.duration:g} s  ",
        ("━" * round(24 * progress), "cyan"), ("━" * (24 - round(24 * progress)), "grey30"),
    )
    panel = Panel(Group(pool, Text(), processes), title=title, title_align="left",
                  border_style="cyan", expand=False)
    if not hints:
        return panel
    return Group(panel,
                 Text("Ctrl-C stops: queued tasks are cancelled, running ones finish", "dim"))


def worker_bar(tick: Tick, max_workers: int) -> Any:
    """One block per worker slot: base, burst (ready or starting), free."""
    from rich.text import Text

    bar = Text()
    pool = [p for p in tick.processes
            if p["role"] in ("base", "burst") and p["state"] != "leaving"]
    for p in sorted(pool, key=lambda p: (p["role"] != "base", p["worker_id"])):
        style = "cyan" if p["role"] == "base" else "yellow"
        bar.append("▒" if p["state"] == "starting" else "█", style)
    bar.append("·" * max(0, max_workers - len(pool)), "grey30")
    return bar


def sparkline(values: Any, top: float) -> str:
    """``values`` as a row of bars, ``top`` being the full height; padded to HISTORY."""
    bars = [
        _BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))] if top > 0 else _BARS[0]
        for v in values
    ]
    return " " * (HISTORY - len(bars)) + "".join(bars)

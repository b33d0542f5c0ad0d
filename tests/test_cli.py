"""procpool-demo: arguments, the JSON lines, bursting, the plot, the stats file and Ctrl-C."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from procpool import cli
from procpool.demo import patterns, plot
from procpool.demo.feeder import Counts
from procpool.demo.record import Recorder, Tick
from procpool.demo.view import (
    JsonView,
    LiveView,
    PlainView,
    RunInfo,
    choose_view,
    plain_line,
    render,
)

ROOT = Path(__file__).parent.parent

#: A small, quick pool for the runs that do not look at bursting.
QUICK = ["--workers", "1", "--max-workers", "2", "--create-ms", "0", "--task-ms", "5",
         "--rate", "20", "--seed", "7"]


def demo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procpool", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, check=False)


def parse_json_lines(stdout: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    objects = [json.loads(line) for line in stdout.splitlines()]
    assert objects, "no output"
    *ticks, summary = objects
    assert all(tick["type"] == "tick" for tick in ticks)
    assert summary["type"] == "summary"
    return ticks, summary


def test_burst_workers_rise_in_a_spike_and_leave_in_the_quiet_spell() -> None:
    # One base worker and tasks of 100 ms arriving at 20/s in the spike: twice what it can
    # do, so the backlog is obvious however fast the machine. A short cool-down lets the
    # burst workers leave within the quiet spell that follows (1.2 s to 4.8 s), long
    # enough to clear the spike's 1.6 s of CPU work on a busy machine.
    done = demo("--duration", "8", "--json", "--pattern", "spike", "--workers", "1",
                "--max-workers", "3", "--rate", "20", "--task-ms", "100", "--create-ms", "0",
                "--burst-interval", "0.05", "--cooldown", "0.25", "--seed", "1")
    assert done.returncode == 0, done.stderr
    ticks, summary = parse_json_lines(done.stdout)
    burst = [tick["burst_workers"] for tick in ticks]
    timeline = [(t["t"], t["burst_workers"], t["queued_tasks"], t["busy_workers"]) for t in ticks]
    rose = next((i for i in range(1, len(burst)) if burst[i] > burst[i - 1]), None)
    assert rose is not None, f"no burst worker started: {timeline}"
    fell = [i for i in range(rose + 1, len(burst)) if burst[i] < burst[i - 1]]
    assert fell, f"burst workers never left: {timeline}"
    assert summary["max_burst_workers"] == max(burst)
    assert summary["burst_workers_started"] >= 1
    assert summary["burst_workers_stopped"] >= 1
    assert summary["scale_events"][0]["event"] == "start"

    assert 25 < len(ticks) < 40  # about four ticks a second for 8 s
    assert ticks[-1]["t"] >= 8.0
    first = ticks[0]
    for key in ("t", "target_rate", "base_workers", "burst_workers", "busy_workers",
                "starting_workers", "queued_tasks", "priority_tasks", "arrival_rate",
                "completion_rate", "p95_ms", "submitted", "completed", "failed", "crashed",
                "processes"):
        assert key in first
    assert all(tick["base_workers"] == 1 for tick in ticks)
    assert summary["tasks_submitted"] == (summary["tasks_completed"] + summary["tasks_failed"]
                                          + summary["tasks_crashed"] + summary["tasks_cancelled"])
    assert summary["tasks_completed"] > 0
    assert summary["tasks_failed"] == summary["tasks_crashed"] == 0
    assert summary["interrupted"] is False
    assert 8.0 <= summary["duration_seconds"] < 30


def test_plot_and_stats_file_failures_and_crashes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    picture, stats = tmp_path / "run.png", tmp_path / "stats.json"
    # With seed 7 the second and fourth tasks crash their worker, the first one fails.
    done = demo(*QUICK, "--duration", "1.5", "--json", "--plot", str(picture),
                "--dump-stats", str(stats), "--pattern", "steady", "--fail-rate", "0.2",
                "--crash-rate", "0.1")
    assert done.returncode == 0, done.stderr
    ticks, summary = parse_json_lines(done.stdout)
    assert summary["plot"] == str(picture)
    assert summary["stats_file"] == str(stats)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000
    dump = json.loads(stats.read_text())  # the last tick's dump_stats()
    assert {p["pid"] for p in dump["processes"]} == {p["pid"] for p in ticks[-1]["processes"]}
    assert dump["processes"][0]["role"] == "supervisor"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.png", "stats.json"]
    assert summary["tasks_failed"] > 0
    assert summary["tasks_crashed"] > 0  # each took its worker down; the pool carried on
    assert summary["tasks_completed"] > 0


def test_ctrl_c_stops_cleanly_with_a_summary_and_no_process_left() -> None:
    # Like Ctrl-C in a terminal: SIGINT to the whole process group (the workers ignore it).
    proc = subprocess.Popen(
        [sys.executable, "-m", "procpool", *QUICK, "--duration", "60", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the pool is up and working
        assert first["type"] == "tick"
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 2  # workers and multiprocessing's own servers
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    ticks, summary = parse_json_lines(json.dumps(first) + "\n" + out)
    assert summary["interrupted"] is True
    assert summary["duration_seconds"] < 30
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left behind: {alive}"
    # Workers started after `family` was listed (burst workers, replacements) are gone too.
    listed = {p["pid"] for tick in ticks for p in tick["processes"]
              if p["role"] != "supervisor" and p["pid"] is not None}
    assert listed
    assert not [pid for pid in listed if running(pid)]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("args", [
    ["--rate", "-5"],
    ["--rate", "0"],
    ["--workers", "0"],
    ["--workers", "two"],
    ["--workers", "4", "--max-workers", "3"],
    ["--task-ms", "-1"],
    ["--duration", "0"],
    ["--duration", "inf"],
    ["--burst-interval", "nan"],
    ["--fail-rate", "1.5"],
    ["--fail-rate", "0.6", "--crash-rate", "0.6"],
    ["--pattern", "zigzag"],
    ["--plot", "/no/such/folder/run.png"],
    ["--frobnicate"],
])
def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: procpool-demo")
    assert "procpool-demo: error: " in err


def test_bad_arguments_exit_2_from_the_command_too() -> None:
    done = demo("--max-workers", "1", "--workers", "2")
    assert done.returncode == 2
    assert "--max-workers (1) must be at least --workers (2)" in done.stderr
    assert done.stdout == ""


def test_plot_without_matplotlib_exits_2_before_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    with pytest.raises(SystemExit) as info:
        cli.main(["--plot", str(tmp_path / "run.png")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err
    assert 'pip install "procpool[plot]"' in err
    assert 'pip install ".[plot]"' in err  # the command that works from a clone
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["run.gif", "run.txt", "run"])
def test_plot_into_an_unsupported_file_exits_2_before_running(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    def no_run(args: object) -> int:
        raise AssertionError("the run started")

    monkeypatch.setattr(cli, "run", no_run)
    with pytest.raises(SystemExit) as info:
        cli.main(["--plot", str(tmp_path / name)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: procpool-demo")
    assert "--plot cannot draw" in err
    assert ".png, .svg or .pdf" in err
    assert list(tmp_path.iterdir()) == []


def test_plot_formats_are_checked_by_extension_in_any_case() -> None:
    for name in ("run.png", "run.SVG", "dir.d/run.pdf"):
        assert plot.check_format(name) is None, name
    assert "'.jpeg'" in (plot.check_format("run.jpeg") or "")
    assert "without an extension" in (plot.check_format("dir.d/run") or "")


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"procpool-demo {importlib.metadata.version('procpool')}\n"


# -- pieces, without a pool ------------------------------------------------------------------


def make_tick(t: float = 2.0, burst: int = 1, processes: list[dict[str, Any]] | None = None,
              ) -> Tick:
    dump = {
        "stats": {"base_workers": 2, "burst_workers": burst, "busy_workers": 3,
                  "starting_workers": 0, "queued_tasks": 12, "priority_tasks": 1},
        "metrics": {"task_arrival_rate": 55.5, "task_completion_rate": 41.0,
                    "p95_execution_time": 0.063},
        "processes": processes if processes is not None else [
            {"pid": 100, "worker_id": None, "role": "supervisor", "state": "running",
             "cpu_percent": 12.0, "rss_bytes": 50 << 20, "num_threads": 4, "tasks_done": 9,
             "uptime_seconds": 2.0},
            {"pid": 101, "worker_id": 1, "role": "base", "state": "busy", "cpu_percent": 99.0,
             "rss_bytes": 30 << 20, "num_threads": 2, "tasks_done": 5, "uptime_seconds": 2.0},
            {"pid": None, "worker_id": 3, "role": "burst", "state": "starting",
             "cpu_percent": None, "rss_bytes": None, "num_threads": None, "tasks_done": 0,
             "uptime_seconds": 0.1},
        ],
    }
    return Tick.build(t, 60.0, dump, Counts(submitted=30, completed=9, failed=1, crashed=2))


INFO = RunInfo("spike", 15.0, 60.0, 50.0, 2, 6)


def test_plain_line_and_json_tick_carry_the_figures() -> None:
    line = plain_line(make_tick())
    for part in ("2.0s", "target  60.0/s", "base 2", "burst 1", "busy 3", "queued 12",
                 "priority 1", "in  55.5/s", "out  41.0/s", "p95   63 ms", "done 9",
                 "failed 1", "crashed 2"):
        assert part in line
    data = make_tick().to_json()
    assert data["type"] == "tick"
    assert data["p95_ms"] == 63.0
    assert data["submitted"] == 30
    assert data["processes"][1]["pid"] == 101
    json.dumps(data, allow_nan=False)


def test_live_view_renders_pool_and_processes() -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    history: dict[str, deque[float]] = {name: deque([1.0, 5.0, 3.0]) for name in
                                        ("workers", "queue", "arrival", "completion")}
    console.print(render(make_tick(), INFO, history))
    text = console.export_text()
    for part in ("procpool demo", "spike", "base 2", "burst 1", "busy 3", "12 normal",
                 "1 priority", "55.5/s", "target 60/s", "63 ms", "9 done", "supervisor",
                 "101", "starting", "Ctrl-C"):
        assert part in text, part
    assert "█▒····" in text  # one base worker, one burst worker starting, four free slots


def test_views_are_chosen_by_output() -> None:
    err = io.StringIO()
    assert isinstance(choose_view(INFO, json_lines=True, out=io.StringIO(), err=err), JsonView)
    assert isinstance(choose_view(INFO, json_lines=False, out=io.StringIO(), err=err), PlainView)
    assert isinstance(choose_view(INFO, json_lines=False, out=Terminal(), err=err), LiveView)
    assert err.getvalue() == ""


def test_a_terminal_without_rich_gets_plain_lines_and_one_line_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # makes "import rich" fail
    err = io.StringIO()
    assert isinstance(choose_view(INFO, json_lines=False, out=Terminal(), err=err), PlainView)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert "the live view needs rich" in lines[0]
    assert 'pip install "procpool[demo]"' in lines[0]
    assert 'pip install ".[demo]"' in lines[0]
    piped = io.StringIO()  # no terminal: plain lines are what was asked for, nothing to say
    assert isinstance(choose_view(INFO, json_lines=False, out=io.StringIO(), err=piped),
                      PlainView)
    assert piped.getvalue() == ""


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plain 80-column terminal for rich, whatever the environment says."""
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    yield


class Terminal(io.StringIO):
    """Output that says it is a terminal, as a tty would."""

    def isatty(self) -> bool:
        return True


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: the cursor moves of rich's live view applied."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|[^\x1b]", output):
        if token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token.startswith("\x1b[") and token.endswith("A"):
            row -= int(token[2:-1] or 1)
        elif not token.startswith("\x1b"):  # colours and cursor visibility change nothing
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + 1:]
            col += 1
    return [line.rstrip() for line in lines]


@pytest.mark.usefixtures("terminal")
def test_live_view_leaves_the_header_the_last_frame_and_the_summary_only() -> None:
    out = Terminal()
    view = LiveView(INFO, out)
    view.start()
    starting = screen(out.getvalue())
    view.update(make_tick(1.0))
    view.update(make_tick(2.0))
    recorder = Recorder()
    recorder.add(make_tick(2.0))
    view.finish(recorder.summary(elapsed=2.0, counts=Counts(submitted=30, completed=30),
                                 interrupted=False))
    assert any("starting the base workers" in line for line in starting)
    shown = [line for line in screen(out.getvalue()) if line]
    text = "\n".join(shown)
    assert "starting the base workers" not in text
    assert "Ctrl-C" not in text  # the run is over: the hint no longer applies
    panel_top = next(i for i, line in enumerate(shown) if line.startswith("╭─ procpool demo"))
    assert " ".join(shown[:panel_top]) == INFO.header()  # only the header above the panel
    assert "2.0 / 15 s" in shown[panel_top]  # the last tick's frame, drawn once
    assert text.count("╭─") == 1
    assert shown[-4].startswith("procpool demo finished after 2.0 s")


@pytest.mark.usefixtures("terminal")
def test_live_view_erases_the_starting_hint_when_the_pool_cannot_start() -> None:
    out = Terminal()
    view = LiveView(INFO, out)
    view.start()
    view.close()
    assert " ".join(line for line in screen(out.getvalue()) if line) == INFO.header()


def rendered(width: int, renderable: object) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def test_live_view_is_as_wide_as_its_contents_not_the_terminal() -> None:
    history: dict[str, deque[float]] = {name: deque([1.0, 5.0, 3.0]) for name in
                                        ("workers", "queue", "arrival", "completion")}
    wide = rendered(160, render(make_tick(), INFO, history))
    narrow = rendered(80, render(make_tick(), INFO, history))
    assert max(len(line.rstrip()) for line in wide) <= 80
    assert [line.rstrip() for line in wide] == [line.rstrip() for line in narrow]
    tasks_row = next(line for line in narrow if "submitted" in line)
    assert "30 submitted" in tasks_row  # not wrapped onto a second line
    assert "9 done" in tasks_row
    assert "2 crashed" in tasks_row


def test_supervisor_row_shows_no_task_count_of_its_own() -> None:
    history: dict[str, deque[float]] = {name: deque() for name in
                                        ("workers", "queue", "arrival", "completion")}
    lines = rendered(100, render(make_tick(), INFO, history))

    def row(first: str) -> list[str]:
        line = next(line for line in lines if line.strip("│ ").startswith(first))
        return line.strip("│ ").split()

    assert row("pid")[-2:] == ["tasks", "uptime"]
    assert row("100")[-2] == "-"  # the supervisor runs no task itself
    assert row("101")[-2] == "5"
    assert any("9 done" in line for line in lines)  # the pool's total is in the panel


def test_recorder_sees_burst_workers_come_and_go() -> None:
    def worker(worker_id: int, role: str, state: str = "idle") -> dict[str, Any]:
        return {"pid": 1000 + worker_id, "worker_id": worker_id, "role": role, "state": state}

    recorder = Recorder()
    recorder.add(make_tick(0.0, 0, [worker(1, "base")]))
    recorder.add(make_tick(0.5, 2, [worker(1, "base"), worker(2, "burst"), worker(3, "burst")]))
    recorder.add(make_tick(1.0, 1, [worker(1, "base"), worker(2, "burst", "leaving"),
                                    worker(3, "burst")]))
    recorder.add(make_tick(1.5, 0, [worker(1, "base")]))
    summary = recorder.summary(elapsed=1.6, counts=Counts(submitted=3, completed=3),
                               interrupted=False)
    assert [(e["t"], e["event"], e["worker_id"]) for e in summary["scale_events"]] == [
        (0.5, "start", 2), (0.5, "start", 3), (1.0, "stop", 2), (1.5, "stop", 3)]
    assert summary["max_burst_workers"] == 2
    assert summary["burst_workers_started"] == summary["burst_workers_stopped"] == 2


@pytest.mark.parametrize("name", sorted(patterns.PATTERNS))
def test_patterns_stay_between_quiet_and_peak(name: str) -> None:
    pattern = patterns.PATTERNS[name]
    rates = [pattern(i / 100 * 15, 15, 60) for i in range(100)]
    assert min(rates) >= 60 * patterns.QUIET_SHARE - 1e-9
    assert max(rates) == pytest.approx(60, rel=0.01)


def test_spike_pattern_has_two_spikes_with_quiet_between() -> None:
    rates = [patterns.spike(i / 100 * 15, 15, 60) for i in range(100)]
    edges = [i for i in range(1, 100) if rates[i] != rates[i - 1]]
    assert len(edges) == 4
    assert rates[0] == rates[50] == rates[99] == 60 * patterns.QUIET_SHARE

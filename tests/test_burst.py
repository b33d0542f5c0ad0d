"""Burst scaling end to end: real workers come under load and leave when it is gone.

These tests watch a real pool on a small, noisy machine, so their time bounds are
generous. Tasks sleep: bursting is about concurrency, not CPU. The controller's
own rules are tested without processes in tests/policy/test_burst.py.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from time import monotonic
from typing import Any, cast

import psutil
import pytest
from loguru import logger

from procpool import Config, Stats, TaskManager
from procpool.supervisor import Supervisor, cooldown_ticks
from tests import burst_tasks, tasks
from tests.polling import wait_until

ROOT = Path(__file__).parent.parent


def burst_config(folder: Path, **overrides: Any) -> Config[tasks.Marker]:
    """The guide's pool: 2 base workers, at most 8, a burst decision every 0.2 s."""
    options: dict[str, Any] = {
        "on_create": tasks.make_marker(str(folder)),
        "on_destroy": tasks.destroy_marker,
        "worker_count": 2,
        "max_worker_count": 8,
        "burst_interval": 0.2,
        "resource_pool_size": 0,
    }
    options.update(overrides)
    return Config(**options)


def pids(folder: Path, prefix: str) -> set[int]:
    """Worker pids that left a ``create-<pid>`` or ``destroy-<pid>`` file (tests.tasks.Marker)."""
    return {int(p.name.split("-")[1]) for p in folder.iterdir() if p.name.startswith(prefix + "-")}


def live_processes(pids: set[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return found


class Sampler:
    """Reads ``stats()`` every ``every`` seconds on a thread and keeps every sample.

    :meth:`wait_until` waits for a sample that satisfies a condition: stats
    change without an event a test could wait on, so a short poll is the tool.
    """

    def __init__(self, manager: TaskManager[Any], every: float = 0.01) -> None:
        self.manager = manager
        self.every = every
        self.samples: list[tuple[float, Stats]] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = (monotonic(), self.manager.stats())
            with self._changed:
                self.samples.append(sample)
                self._changed.notify_all()
            self._stop.wait(self.every)

    def wait_until(self, condition: Callable[[Stats], bool], timeout: float) -> float:
        """Seconds until a new sample met ``condition``; fails the test after ``timeout``."""
        start = monotonic()
        with self._changed:
            seen = len(self.samples)
            while True:
                for _, stats in self.samples[seen:]:
                    if condition(stats):
                        return monotonic() - start
                seen = len(self.samples)
                left = start + timeout - monotonic()
                if left <= 0:
                    last = self.samples[-1][1] if self.samples else None
                    pytest.fail(f"no sample within {timeout} s met the condition; last: {last}")
                self._changed.wait(left)

    @property
    def stats(self) -> list[Stats]:
        return [stats for _, stats in self.samples]


@pytest.fixture
def burst_log() -> Iterator[list[str]]:
    """The procpool log lines about burst decisions, while the test runs."""
    lines: list[str] = []
    sink = logger.add(
        lambda message: lines.append(message.record["message"]),
        level="INFO",
        filter=lambda record: record["message"].startswith("burst:"),
    )
    logger.enable("procpool")
    try:
        yield lines
    finally:
        logger.disable("procpool")
        logger.remove(sink)


def queue_wave(manager: TaskManager[Any], first: int, count: int, seed: int) -> list[Any]:
    """``count`` tasks of 100-400 ms, as in the guide, each returning its own number."""
    rng = random.Random(seed)
    return [manager.queue_task(burst_tasks.nap, rng.uniform(0.1, 0.4), first + i)
            for i in range(count)]


def test_the_guide_scenario_bursts_under_a_flood_and_returns_to_base(tmp_path: Path) -> None:
    config = burst_config(tmp_path)
    room = config.effective_max_workers - config.worker_count
    with TaskManager(config) as manager, Sampler(manager) as sampler:
        futures = queue_wave(manager, 0, 20, seed=1)
        assert sampler.wait_until(lambda s: s.burst_workers > 0, timeout=1.0) < 1.0
        assert [f.result(timeout=30) for f in futures] == list(range(20))
        sampler.wait_until(lambda s: s.burst_workers == 0, timeout=10.0)
        # The queue refills: the pool grows again, and shrinks again.
        futures = queue_wave(manager, 20, 20, seed=2)
        sampler.wait_until(lambda s: s.burst_workers > 0, timeout=1.0)
        assert [f.result(timeout=30) for f in futures] == list(range(20, 40))
        sampler.wait_until(lambda s: s.burst_workers == 0, timeout=10.0)
    assert max(s.burst_workers for s in sampler.stats) <= room
    assert all(s.base_workers == 2 for s in sampler.stats)


@pytest.mark.parametrize(
    "overrides",
    [
        {"burst_interval": 0},
        {"burst_interval": None},
        {"max_worker_count": 2},
    ],
    ids=["interval-0", "interval-None", "max-equals-base"],
)
def test_disabled_bursting_never_starts_a_burst_worker(
    tmp_path: Path, overrides: dict[str, Any], burst_log: list[str]
) -> None:
    config = burst_config(tmp_path, **overrides)
    assert not config.bursting
    with TaskManager(config) as manager, Sampler(manager) as sampler:
        # 4.8 s of work queued on 2 workers: an enabled pool would burst at once.
        futures = [manager.queue_task(burst_tasks.nap, 0.3, i) for i in range(16)]
        assert [f.result(timeout=30) for f in futures] == list(range(16))
    assert sampler.stats
    assert all(s.burst_workers == 0 and s.base_workers == 2 for s in sampler.stats)
    assert len(pids(tmp_path, "create")) == 2
    assert burst_log == []


def test_retired_burst_workers_run_on_destroy_and_every_task_runs_once(
    tmp_path: Path, burst_log: list[str]
) -> None:
    markers, runs = tmp_path / "markers", tmp_path / "runs"
    markers.mkdir()
    runs.mkdir()
    # A short cool-down, so that workers retire while the next wave arrives.
    config = burst_config(markers, burst_cooldown=0.4)

    def wave(first: int, count: int) -> list[Any]:
        return [manager.queue_task(burst_tasks.nap_and_note, str(runs), 0.1 + 0.05 * (i % 5),
                                   first + i) for i in range(count)]

    with TaskManager(config) as manager, Sampler(manager) as sampler:
        base = pids(markers, "create")
        futures = wave(0, 40)
        sampler.wait_until(lambda s: s.burst_workers >= 2, timeout=2.0)
        sampler.wait_until(lambda s: s.queued_tasks == 0, timeout=20.0)
        peak = max(s.burst_workers for s in sampler.stats)
        # The first retirements: a new wave lands among leaving workers.
        sampler.wait_until(lambda s: s.burst_workers < peak, timeout=10.0)
        futures += wave(40, 40)
        results = [f.result(timeout=30) for f in futures]
        sampler.wait_until(lambda s: s.burst_workers == 0, timeout=10.0)
        burst = pids(markers, "create") - base
        _, alive = psutil.wait_procs(live_processes(burst), timeout=10.0)
        assert alive == []
        # Every burst worker destroyed its resource on the way out; the base ones live on.
        assert pids(markers, "destroy") == burst
    assert len(base) == 2
    assert len(burst) >= 2
    assert pids(markers, "destroy") == base | burst  # the base ones at stop()
    assert sorted(results) == list(range(80))
    runs_per_task = Counter(int(p.name.split("-")[1]) for p in runs.iterdir())
    assert runs_per_task == Counter(range(80))  # none lost, none run twice
    # Every scale event was logged with the numbers behind it.
    starts = [line for line in burst_log if line.startswith("burst: starting")]
    retires = [line for line in burst_log if line.startswith("burst: retiring")]
    assert starts and retires
    assert all(re.search(r"queued=\d+ arrival=[\d.]+/s completion=[\d.]+/s", line)
               for line in starts)
    assert all(re.search(r"quiet=\d+/\d+ ticks idle_burst=\d+", line) for line in retires)


def test_a_slow_on_create_never_lets_the_pool_exceed_max_worker_count(tmp_path: Path) -> None:
    config = burst_config(
        tmp_path,
        on_create=partial(burst_tasks.slow_marker, str(tmp_path), 0.5),
        max_worker_count=5,
        burst_interval=0.05,  # many decisions while each new worker is still starting
    )
    with TaskManager(config) as manager, Sampler(manager, every=0.005) as sampler:
        futures = [manager.queue_task(burst_tasks.nap, 0.2, i) for i in range(40)]
        assert [f.result(timeout=30) for f in futures] == list(range(40))
    totals = [s.base_workers + s.burst_workers for s in sampler.stats]
    assert max(totals) == 5  # it did burst, to the maximum and no further
    assert any(s.starting_workers > 0 for s in sampler.stats)
    # 8 s of work on at most 5 workers leaves no 2 s lull: each worker started once.
    assert len(pids(tmp_path, "create")) <= 5 + 2


@pytest.mark.parametrize(
    ("cooldown", "interval", "start", "ticks"),
    [
        (1.0, 0.2, None, 5),
        (1.0, 0.25, None, 4),
        (1.0, 0.3, None, 4),
        (0.0, 0.2, None, 1),
        (0.05, 0.2, None, 1),
        (1.0, 0.2, 0.3, 5),  # a quick start-up changes nothing
        (1.0, 0.2, 3.0, 15),  # a slow one: idle workers stay as long as one takes to start
    ],
)
def test_burst_cooldown_is_counted_in_ticks_and_never_shorter_than_a_start_up(
    cooldown: float, interval: float, start: float | None, ticks: int
) -> None:
    assert cooldown_ticks(cooldown, interval, start) == ticks
    config = Config(on_create=tasks.make_plain, worker_count=2, max_worker_count=4,
                    burst_interval=interval, burst_cooldown=cooldown)
    supervisor = Supervisor(config, cast(Any, None))  # not started: no process, no thread
    controller = supervisor._bursting.controller
    assert controller.enabled
    assert controller.cooldown_ticks == cooldown_ticks(cooldown, interval, None)


def test_burst_cooldown_is_checked() -> None:
    assert Config(on_create=tasks.make_plain).burst_cooldown == 1.0
    with pytest.raises(ValueError, match="burst_cooldown must be a finite number >= 0"):
        Config(on_create=tasks.make_plain, burst_cooldown=-1.0)
    with pytest.raises(TypeError, match="burst_cooldown must be a number of seconds"):
        Config(on_create=tasks.make_plain, burst_cooldown=None)  # type: ignore[arg-type]


def test_the_burst_scaling_example_scales_up_and_back_down() -> None:
    started = monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "burst_scaling.py")],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT), check=False,
    )
    elapsed = monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("Stats: ")]
    pattern = (r"Stats: Active=(\d+) \(Base=(\d+), Burst=(\d+)\), Queued=(\d+), "
               r"ArrivalRate=\d+\.\d\d, CompletionRate=\d+\.\d\d")
    parsed = [re.fullmatch(pattern, line) for line in lines]
    assert all(parsed), lines
    burst = [int(match.group(3)) for match in parsed if match]
    first = next(i for i, count in enumerate(burst) if count > 0)
    assert 0 in burst[first:], burst  # rose above 0, then came back to 0
    assert max(burst) <= 6
    assert "20 tasks completed" in done.stdout
    assert done.stdout.rstrip().endswith("Stopped.")
    assert elapsed < 30  # about 5 s on a quiet machine


def test_metrics_report_the_cpu_share_of_recent_tasks(tmp_path: Path) -> None:
    with TaskManager(burst_config(tmp_path, max_worker_count=None)) as manager:
        assert manager.metrics().cpu_share is None  # no task ended yet
        for f in [manager.queue_task(burst_tasks.spin, 0.05) for _ in range(6)]:
            f.result(timeout=30)
        cpu_bound = manager.metrics().cpu_share
        assert cpu_bound is not None and cpu_bound > 0.6
        for f in [manager.queue_task(burst_tasks.nap, 0.05, i) for i in range(30)]:
            f.result(timeout=30)
        sleepy = manager.metrics().cpu_share
        assert sleepy is not None and sleepy < 0.3


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("create_seconds", [0.0, 0.3])
def test_the_first_burst_decision_comes_an_interval_after_the_pool_is_up(
    tmp_path: Path, burst_log: list[str], create_seconds: float, workers: int,
    start_method: str,
) -> None:
    """Even after a start slower than ``burst_interval``, the first decision sees the
    first tasks finished (0.1 s each, the interval 0.2 s): it never sizes blind."""
    config = burst_config(tmp_path, on_create=partial(
        burst_tasks.slow_marker, str(tmp_path), create_seconds), worker_count=workers,
        start_method=start_method)
    with TaskManager(config) as manager, Sampler(manager) as sampler:
        futures = [manager.queue_task(burst_tasks.nap, 0.1, i) for i in range(40)]
        sampler.wait_until(lambda stats: stats.burst_workers > 0, 30)
        assert [f.result(timeout=30) for f in futures] == list(range(40))
    starts = [line for line in burst_log if line.startswith("burst: starting")]
    assert starts, burst_log  # 40 naps queued on 1 or 2 workers: it bursts, once it knows them
    assert not any("mean task time unknown" in line for line in starts), starts


def test_cpu_bound_tasks_never_burst_past_the_cores(
    tmp_path: Path, burst_log: list[str]
) -> None:
    from procpool.supervisor.bursting import usable_cores

    cores = usable_cores()
    config = burst_config(tmp_path, worker_count=min(2, cores), max_worker_count=cores + 6)
    shares: list[float] = []  # the CPU share the controller saw, all along the run

    def finished() -> bool:
        share = manager.metrics().cpu_share
        if share is not None:
            shares.append(share)
        return all(f.done() for f in futures)

    with TaskManager(config) as manager, Sampler(manager) as sampler:
        futures = [manager.queue_task(burst_tasks.spin, 0.05) for _ in range(120)]
        wait_until(finished, 60)
        assert all(f.result() for f in futures)
    assert shares
    if min(shares) < 0.8:
        # Other processes took the cores (a parallel test run): the tasks really spent
        # part of their time waiting, so more workers than cores were allowed then. The
        # rule itself is tested in virtual time (tests/policy/test_burst.py).
        pytest.skip(f"the machine was busy: the tasks' CPU share fell to {min(shares):.2f}")
    peak = max(s.base_workers + s.burst_workers for s in sampler.stats)
    assert peak <= cores + 1, peak
    assert any("held" in line and "cpu share" in line for line in burst_log), burst_log

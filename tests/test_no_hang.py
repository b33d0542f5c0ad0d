"""Nothing hangs: every call returns and every future ends, whatever the input.

One section per way a pool could freeze: a task that cannot be pickled, a
``BaseException`` while pickling, floods of worker starts, hooks that never
return, done-callbacks that block, and Ctrl-C. Each test runs under ``fork``
and ``forkserver`` and under a hard timeout, so a regression fails instead of
hanging; every wait inside has a bound too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path
from time import monotonic
from typing import Any
from unittest import mock

import psutil
import pytest
from loguru import logger

from procpool import Config, ResourceCreationError, TaskManager, TaskPicklingError
from procpool.policy.restarts import RestartBreaker
from tests import hang_tasks as ht
from tests import tasks
from tests.gate import Gate
from tests.polling import wait_until
from tests.pools import pool_config as config
from tests.processes import descendants, exited

ROOT = Path(__file__).parent.parent

#: Far above what the pool needs (ms), so a loaded CI machine never makes a test flaky.
WITHIN = 10.0

@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    logger.enable("procpool")
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"))
    yield lines
    logger.remove(sink)
    logger.disable("procpool")


def all_gone(pids: list[int]) -> bool:
    return all(exited(pid) for pid in pids)


# == 1. a task that cannot be pickled stalls nothing ===========================

BadSubmit = Callable[[TaskManager[Any]], "Future[Any]"]

#: Ways to hand the pool a task it cannot pickle; each must fail only its own future.
BAD_SUBMISSIONS: dict[str, BadSubmit] = {
    "argument": lambda m: m.queue_task(tasks.double, threading.Lock()),
    "kwarg": lambda m: m.queue_task(tasks.add, 1, b=threading.Lock()),
    "closure": lambda m: m.queue_task(ht.closure_over_lock(), 1),
    "priority": lambda m: m.queue_task_with_priority(tasks.double, threading.Lock()),
    "timeout": lambda m: m.submit(tasks.double, (threading.Lock(),), timeout=30),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("bad", sorted(BAD_SUBMISSIONS))
def test_an_unpicklable_task_fails_alone_and_every_task_behind_it_runs(
    start_method: str, worker_count: int, warm: bool, bad: str
) -> None:
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        if warm:  # tasks of >= 1 ms: one task per send, the case that stalled
            for f in [manager.queue_task(tasks.sleep_for, 0.002) for _ in range(20)]:
                f.result(timeout=WITHIN)
        for _ in range(2):  # two bad tasks in a row, too
            failed = BAD_SUBMISSIONS[bad](manager)
            error = failed.exception(timeout=WITHIN)
            assert isinstance(error, TaskPicklingError)
            assert "cannot be pickled" in str(error)
        good = [manager.queue_task(tasks.double, i) for i in range(5)]
        good.append(manager.queue_task_with_priority(tasks.double, 100))
        assert [f.result(timeout=WITHIN) for f in good] == [0, 2, 4, 6, 8, 200]
        assert manager.stats().queued_tasks == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
def test_a_map_whose_first_item_is_unpicklable_fails_there_and_the_pool_goes_on(
    start_method: str, worker_count: int
) -> None:
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        results = manager.map(tasks.double, [threading.Lock(), 1, 2])
        with pytest.raises(TaskPicklingError, match="positional argument 0"):
            next(results)
        assert manager.queue_task(tasks.double, 21).result(timeout=WITHIN) == 42
        assert list(manager.map(tasks.double, range(10))) == [2 * i for i in range(10)]


@pytest.mark.timeout(60)
def test_an_unpicklable_run_task_leaves_the_reserved_worker_free(start_method: str) -> None:
    with TaskManager(config(start_method, worker_count=1, resource_pool_size=1)) as manager:
        for _ in range(2):
            with pytest.raises(TaskPicklingError):
                manager.run_task(tasks.double, threading.Lock())
        assert manager.run_task(tasks.double, 4) == 8
        assert manager.stats().available_resources == 1


# == 2. a BaseException while pickling fails one future ========================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, ValueError])
def test_an_exception_of_any_kind_while_pickling_fails_only_that_future(
    start_method: str, error: type[BaseException]
) -> None:
    with TaskManager(config(start_method)) as manager:
        failed = manager.queue_task(tasks.double, ht.ReduceRaises(error))
        batch = [manager.queue_task(tasks.double, i) for i in range(20)]
        exc = failed.exception(timeout=WITHIN)
        assert isinstance(exc, TaskPicklingError)
        assert "ReduceRaises" in str(exc)
        assert isinstance(exc.__cause__, error)
        assert [f.result(timeout=WITHIN) for f in batch] == [2 * i for i in range(20)]
        assert manager.run_task(tasks.double, 5) == 10
        assert manager.stopped is False


# == 3. floods of worker starts ================================================


@pytest.mark.timeout(120)
def test_a_pool_of_600_workers_starts_and_stops(start_method: str) -> None:
    with TaskManager(config(start_method, worker_count=600)) as manager:
        assert manager.stats().active_workers == 600
        assert len(manager.worker_pids()) == 600
        assert list(manager.map(tasks.double, range(1200), chunksize=10))[-1] == 2398


def test_a_pool_larger_than_the_open_file_limit_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    with pytest.raises(ValueError, match=r"Config\.worker_count=600 .*limit of 1024"):
        Config(on_create=tasks.make_plain, worker_count=600)
    with pytest.raises(ValueError, match=r"Config\.max_worker_count=2000"):
        Config(on_create=tasks.make_plain, worker_count=2, max_worker_count=2000)
    assert Config(on_create=tasks.make_plain, worker_count=300).worker_count == 300


class PeakChildren:
    """Watches this process's descendants on a thread; ``peak`` is the most seen at once."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def __enter__(self) -> PeakChildren:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(0.002):
            live = [p for p in descendants().values() if _running(p)]
            self.peak = max(self.peak, len(live))


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("reserved", "max_workers"), [(0, 2), (1, 3)])
def test_a_storm_of_concurrent_run_task_calls_keeps_the_process_count_bounded(
    start_method: str, reserved: int, max_workers: int
) -> None:
    cfg = config(start_method, resource_pool_size=reserved, max_worker_count=max_workers,
                 burst_interval=None)
    with TaskManager(cfg) as manager:
        base = len(manager.worker_pids())

        async def storm() -> list[int]:
            calls = [manager.run_task_async(tasks.double, i) for i in range(1000)]
            return await asyncio.wait_for(asyncio.gather(*calls), WITHIN * 6)

        with PeakChildren() as watch:
            assert asyncio.run(storm()) == [2 * i for i in range(1000)]
    # base + reserved workers, at most max_worker_count temporary ones, the fork server
    assert watch.peak <= base + max_workers + (start_method == "forkserver")


@pytest.mark.timeout(60)
def test_run_task_calls_beyond_the_temporary_limit_wait_ahead_of_queued_tasks(
    start_method: str, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    with TaskManager(config(start_method, worker_count=1, max_worker_count=1,
                            burst_interval=None)) as manager:
        queued = [manager.queue_task(tasks.sleep_for, 0.01) for _ in range(30)]
        pids: list[int] = []
        first = threading.Thread(
            target=lambda: pids.append(manager.run_task(tasks.wait_gate, gate.path)))
        first.start()
        gate.entered()  # the one temporary worker allowed is busy
        second = threading.Thread(target=lambda: pids.append(manager.run_task(tasks.pid_of)))
        second.start()
        gate.open()
        first.join(WITHIN)
        second.join(WITHIN)
        assert not first.is_alive() and not second.is_alive()
        # the second call waited for the first's temporary worker instead of starting one
        assert len(pids) == 2 and pids[0] == pids[1]
        assert all(f.result(timeout=WITHIN) == 0.01 for f in queued)


# == 4. hooks that never return ================================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
def test_an_on_create_over_create_timeout_fails_the_constructor_saying_so(
    start_method: str, worker_count: int
) -> None:
    started = monotonic()
    with pytest.raises(ResourceCreationError, match=r"on_create timed out.*create_timeout=0\.5"):
        TaskManager(config(start_method, worker_count=worker_count, on_create=ht.hang,
                           create_timeout=0.5))
    assert monotonic() - started < 0.5 + WITHIN
    # the autouse fixture checks that no worker outlived the failed constructor


@pytest.mark.timeout(60)
def test_a_replacement_stuck_in_on_create_is_killed_and_backs_off(
    start_method: str, tmp_path: Path, logs: list[str]
) -> None:
    breaker = RestartBreaker()
    cfg = config(start_method, worker_count=1, on_create=ht.HangAfter(str(tmp_path), good=1),
                 create_timeout=0.3)
    with TaskManager(cfg, _breaker=breaker) as manager:
        (pid,) = manager.worker_pids()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: any("on_create timed out" in line for line in logs), WITHIN)
        wait_until(lambda: breaker.failing, WITHIN)
        stuck = [int(p.name.split("-")[2]) for p in tmp_path.iterdir()][1:]
        wait_until(lambda: all_gone(stuck), WITHIN)
        manager.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
def test_an_on_destroy_over_destroy_timeout_is_killed_and_stop_returns(
    start_method: str, worker_count: int, logs: list[str]
) -> None:
    cfg = config(start_method, worker_count=worker_count, on_destroy=lambda r: ht.hang(),
                 destroy_timeout=0.3)
    manager = TaskManager(cfg)
    pids = manager.worker_pids()
    assert manager.queue_task(tasks.double, 2).result(timeout=WITHIN) == 4
    started = monotonic()
    manager.stop()
    assert monotonic() - started < 0.3 + WITHIN
    assert all_gone(pids)
    assert sum("destroy_timeout=0.3 s; killing it" in line for line in logs) == worker_count


def test_destroy_timeout_has_a_finite_default_and_both_timeouts_are_checked() -> None:
    default = Config(on_create=tasks.make_plain).destroy_timeout
    assert default is not None and 0 < default < 3600
    assert Config(on_create=tasks.make_plain).create_timeout is None
    for field in ("create_timeout", "destroy_timeout"):
        with pytest.raises(ValueError, match=f"Config.{field}"):
            Config(on_create=tasks.make_plain, **{field: -1})
        with pytest.raises(TypeError, match=f"Config.{field}"):
            Config(on_create=tasks.make_plain, **{field: "soon"})


@pytest.mark.timeout(90)
def test_stop_does_not_wait_for_burst_workers_stuck_in_on_create(
    start_method: str, tmp_path: Path
) -> None:
    cfg = config(start_method, on_create=ht.HangAfter(str(tmp_path), good=2),
                 max_worker_count=6, burst_interval=0.05, burst_cooldown=0.05)
    manager = TaskManager(cfg)
    backlog = [manager.queue_task(tasks.sleep_for, 0.2) for _ in range(200)]
    wait_until(lambda: manager.stats().starting_workers > 0, WITHIN * 3)
    for future in backlog[4:]:
        future.cancel()
    started = monotonic()
    manager.stop()  # no create_timeout: the stuck workers are not waited for
    assert monotonic() - started < WITHIN
    stuck = [int(p.name.split("-")[2]) for p in tmp_path.iterdir()][2:]
    assert stuck and all_gone(stuck)


_CONSTRUCTOR_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from procpool import Config, TaskManager
from tests import hang_tasks

if __name__ == "__main__":
    config = Config(on_create=hang_tasks.note_pid_then_hang({folder!r}), worker_count=2,
                    resource_pool_size=1, start_method={start_method!r})
    TaskManager(config)
"""


@pytest.mark.timeout(60)
def test_ctrl_c_in_the_constructor_leaves_no_process_behind(
    start_method: str, tmp_path: Path
) -> None:
    script = tmp_path / "app.py"
    notes = tmp_path / "notes"
    notes.mkdir()
    script.write_text(textwrap.dedent(_CONSTRUCTOR_SCRIPT).format(
        root=str(ROOT), folder=str(notes), start_method=start_method))
    app = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(list(notes.iterdir())) == 3, WITHIN)
        pids = [int(p.name.split("-")[1]) for p in notes.iterdir()]
        app.send_signal(signal.SIGINT)
        _, err = app.communicate(timeout=WITHIN)
        assert "KeyboardInterrupt" in err
        wait_until(lambda: all_gone(pids), WITHIN)
    finally:
        app.kill()
        app.wait()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("thread_ran", [False, True], ids=["thread-never-ran", "thread-ran"])
def test_ctrl_c_while_the_supervisor_thread_starts_leaves_no_process_behind(
    start_method: str, thread_ran: bool, tmp_path: Path
) -> None:
    # A single-threaded caller's constructor forks its first workers (and the fork
    # server) before its own thread starts; Ctrl-C can land inside Thread.start, before
    # or after the new thread ran. Either way the constructor raises and kills them.
    real_start = threading.Thread.start
    before = set(descendants())
    supervisors: list[threading.Thread] = []
    forked: list[int] = []

    def interrupted_start(thread: threading.Thread) -> None:
        if thread.name == "procpool-supervisor":
            supervisors.append(thread)
            forked.extend(pid for pid in descendants() if pid not in before)
            if thread_ran:
                real_start(thread)
            raise KeyboardInterrupt
        real_start(thread)

    hang = config(start_method, on_create=ht.note_pid_then_hang(str(tmp_path)),
                  resource_pool_size=1)
    with mock.patch("procpool.backends.local.single_threaded", return_value=True), \
            mock.patch.object(threading.Thread, "start", interrupted_start), \
            pytest.raises(KeyboardInterrupt):
        TaskManager(hang)
    assert len(forked) == (4 if start_method == "forkserver" else 3)  # 3 workers (+ server)
    [supervisor] = supervisors
    if thread_ran:
        supervisor.join(WITHIN)
        assert not supervisor.is_alive()
    else:
        assert supervisor.ident is None
    wait_until(lambda: all_gone(forked), WITHIN)


# == 5. done-callbacks that block ==============================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
def test_a_callback_blocking_on_another_task_of_the_pool_does_not_freeze_it(
    start_method: str, worker_count: int
) -> None:
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        seen: list[int] = []
        done = threading.Event()
        first = manager.queue_task(tasks.double, 1)
        second: Future[int] = manager.queue_task(tasks.sleep_for, 0.05)  # type: ignore[assignment]

        def wait_for_second(future: Future[Any]) -> None:
            seen.append(future.result() + second.result(timeout=WITHIN))
            done.set()

        first.add_done_callback(wait_for_second)
        assert done.wait(WITHIN)
        assert seen == [2.05]
        # and the pool still serves
        assert [f.result(timeout=WITHIN) for f in
                [manager.queue_task(tasks.double, i) for i in range(10)]] == list(range(0, 20, 2))


@pytest.mark.timeout(60)
def test_a_callback_that_blocks_holds_up_neither_dispatch_nor_results(
    start_method: str, tmp_path: Path
) -> None:
    release = threading.Event()
    ran: list[str] = []
    gate = Gate(tmp_path)
    with TaskManager(config(start_method)) as manager:
        blocked = manager.queue_task(tasks.wait_gate, gate.path)
        blocked.add_done_callback(lambda f: (release.wait(WITHIN * 3), ran.append("first")))
        gate.entered()
        gate.open()  # the task ends only now: its callback runs on the callback thread
        blocked.result(timeout=WITHIN)
        later = [manager.queue_task(tasks.double, i) for i in range(50)]
        assert [f.result(timeout=WITHIN) for f in later] == [2 * i for i in range(50)]
        later[-1].add_done_callback(lambda f: ran.append("already done: runs at once"))
        assert ran == ["already done: runs at once"]
        release.set()
    # stop() returned after the callbacks handed over before it had run
    assert ran == ["already done: runs at once", "first"]


@pytest.mark.timeout(60)
def test_callbacks_of_asyncio_awaits_and_cancels_still_run(start_method: str) -> None:
    with TaskManager(config(start_method)) as manager:

        async def main() -> list[int]:
            return list(await asyncio.gather(
                *(manager.queue_task_async(tasks.double, i) for i in range(20))))

        assert asyncio.run(main()) == [2 * i for i in range(20)]
        gate_blocked = manager.queue_task(tasks.sleep_for, 0.3)
        queued = manager.queue_task(tasks.double, 3)
        cancelled: list[bool] = []
        queued.add_done_callback(lambda f: cancelled.append(f.cancelled()))
        if queued.cancel():  # runs its callback here, in this thread
            assert cancelled == [True]
            with pytest.raises(CancelledError):
                queued.result()
        gate_blocked.result(timeout=WITHIN)


# == 6. Ctrl-C ends a program ==================================================

_CTRL_C_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from loguru import logger
from procpool import Config, TaskManager
from tests import hang_tasks, tasks

def run():
    logger.enable("procpool")
    logger.remove()
    logger.add(sys.stderr, level="INFO", format="{{message}}")
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=0,
                    start_method={start_method!r})
    folder, seconds = {folder!r}, {seconds!r}
    if {use_with!r}:
        with TaskManager(config) as manager:
            futures = [manager.queue_task(hang_tasks.sleep_and_note, folder, seconds, i)
                       for i in range(200)]
            futures[-1].result()
    else:
        manager = TaskManager(config)
        futures = [manager.queue_task(hang_tasks.sleep_and_note, folder, seconds, i)
                   for i in range(200)]
        futures[-1].result()

if __name__ == "__main__":
    run()
"""


def _start_ctrl_c_app(tmp_path: Path, start_method: str, seconds: float,
                      use_with: bool) -> tuple[subprocess.Popen[str], Path]:
    notes = tmp_path / "notes"
    notes.mkdir()
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_CTRL_C_SCRIPT).format(
        root=str(ROOT), folder=str(notes), start_method=start_method, seconds=seconds,
        use_with=use_with))
    app = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    # Wait until both workers run a task: Ctrl-C then hits a pool with work in flight.
    wait_until(lambda: len([p for p in notes.iterdir() if p.name.startswith("start")]) >= 2,
               WITHIN)
    return app, notes


def _names(folder: Path, prefix: str) -> set[str]:
    return {p.name.split("-")[1] for p in folder.iterdir() if p.name.startswith(prefix + "-")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("use_with", [True, False], ids=["with", "left-to-exit"])
def test_ctrl_c_cancels_the_queue_and_lets_running_tasks_finish(
    start_method: str, tmp_path: Path, use_with: bool
) -> None:
    # 200 tasks of 0.5 s on 2 workers: draining them would take 50 s.
    app, notes = _start_ctrl_c_app(tmp_path, start_method, 0.5, use_with)
    try:
        app.send_signal(signal.SIGINT)
        _, err = app.communicate(timeout=WITHIN * 2)
        assert "KeyboardInterrupt" in err
        assert app.returncode != 0
        started, finished = _names(notes, "start"), _names(notes, "done")
        assert started == finished  # every running task finished
        assert len(started) < 20  # the queue was cancelled, not drained
    finally:
        app.kill()
        app.wait()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("use_with", [True, False], ids=["with", "left-to-exit"])
def test_a_second_ctrl_c_kills_the_workers_and_exits_at_once(
    start_method: str, tmp_path: Path, use_with: bool
) -> None:
    app, notes = _start_ctrl_c_app(tmp_path, start_method, 600, use_with)
    try:
        pids = [int(p.name.split("-")[2]) for p in notes.iterdir()]
        app.send_signal(signal.SIGINT)
        assert app.stderr is not None
        deadline = monotonic() + WITHIN
        for line in app.stderr:  # the first Ctrl-C was taken: the queue is cancelled
            if "Ctrl-C again" in line or monotonic() > deadline:
                break
        app.send_signal(signal.SIGINT)
        app.wait(timeout=WITHIN)
        assert app.returncode != 0
        wait_until(lambda: all_gone(pids), WITHIN)
        assert _names(notes, "done") == set()  # the 600 s tasks were killed, not awaited
    finally:
        app.kill()
        app.wait()


_NORMAL_EXIT_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from procpool import Config, TaskManager
from tests import hang_tasks, tasks

if __name__ == "__main__":
    manager = TaskManager(Config(on_create=tasks.make_plain, worker_count=2,
                                 resource_pool_size=0, start_method={start_method!r}))
    for i in range(20):
        manager.queue_task(hang_tasks.sleep_and_note, {folder!r}, 0.01, i)
"""


@pytest.mark.timeout(60)
def test_a_normal_exit_still_drains_the_queue(start_method: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_NORMAL_EXIT_SCRIPT).format(
        root=str(ROOT), folder=str(tmp_path), start_method=start_method))
    subprocess.run([sys.executable, str(script)], check=True, timeout=WITHIN * 3)
    assert _names(tmp_path, "done") == {str(i) for i in range(20)}

"""The failure model: every way a task, a worker or the caller can break.

Each test checks the futures' outcomes, the worker count afterwards, and
(through the autouse fixture in conftest.py) that no process is left behind.
Time is asserted only where it is the subject, with generous bounds; the
tight figures live in scripts/bench_failures.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, wait
from concurrent.futures import TimeoutError as FuturesTimeoutError  # builtin from 3.11
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import psutil
import pytest
from loguru import logger

from procpool import (
    Config,
    MaxRetriesExceededError,
    RemoteError,
    ResourceCreationError,
    TaskManager,
    TaskPicklingError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from procpool.policy.restarts import RestartBreaker
from tests import failure_tasks as ft
from tests import tasks
from tests.gate import Gate
from tests.polling import wait_until
from tests.processes import exited as _exited

ROOT = Path(__file__).parent.parent

#: Bound for "detected quickly" in tests: far above the ~ms the pool needs,
#: so that a loaded CI machine never makes it flaky.
DETECT_WITHIN = 2.0



def wait_gone(pid: int, timeout: float = DETECT_WITHIN) -> None:
    """Wait until process ``pid`` no longer exists."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    _, alive = psutil.wait_procs([process], timeout=timeout)
    assert alive == [], f"process {pid} still alive after {timeout} s"


def base_restored(manager: TaskManager[Any], count: int) -> Callable[[], bool]:
    """True once ``count`` base workers are ready and nothing else is starting."""

    def check() -> bool:
        stats = manager.stats()
        return (stats.base_workers, stats.active_workers, stats.starting_workers) == (
            count, count, 0)

    return check


def plain_config(**overrides: Any) -> Config[Any]:
    options: dict[str, Any] = {
        "on_create": tasks.make_plain,
        "worker_count": 2,
        "resource_pool_size": 0,
    }
    options.update(overrides)
    return Config(**options)


def marker_config(folder: Path, **overrides: Any) -> Config[Any]:
    return plain_config(on_create=tasks.make_marker(str(folder)),
                        on_destroy=tasks.destroy_marker, **overrides)


def names(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def learn_tiny_tasks(manager: TaskManager[Any]) -> None:
    """Run many tiny tasks, so the pool sends several per message from now on."""
    assert list(manager.map(tasks.double, range(500), chunksize=1)) == [i * 2 for i in range(500)]


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """procpool's log lines while the test runs."""
    seen: list[str] = []
    logger.enable("procpool")
    handler = logger.add(lambda message: seen.append(str(message)), level="DEBUG",
                         format="{level} {message}")
    yield seen
    logger.remove(handler)
    logger.disable("procpool")


# == worker death mid-task =====================================================


@pytest.mark.parametrize("how", ["SIGKILL", "exit", "segfault"])
def test_a_worker_dying_mid_task_fails_only_that_task(how: str) -> None:
    with TaskManager(plain_config(worker_count=2)) as manager:
        learn_tiny_tasks(manager)  # 500 tasks: ids 1-500; from now on tasks share messages
        before = [manager.queue_task(tasks.double, i) for i in range(5)]
        doomed = manager.queue_task(ft.die, how)
        after = [manager.queue_task(tasks.double, i) for i in range(5, 10)]
        error = doomed.exception(timeout=30)
        assert isinstance(error, WorkerCrashedError)
        assert error.pid > 0 and error.task == "task 506 (die)"
        expected = {"SIGKILL": (-signal.SIGKILL, "SIGKILL"), "exit": (3, None),
                    "segfault": (-signal.SIGSEGV, "SIGSEGV")}[how]
        assert (error.exitcode, error.signal_name) == expected
        assert [f.result(timeout=30) for f in before + after] == [i * 2 for i in range(10)]
        wait_until(base_restored(manager, 2))
        assert error.pid not in manager.worker_pids()
        assert manager.queue_task(tasks.double, 21).result(timeout=30) == 42


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
@pytest.mark.parametrize("worker_count", [1, 2])
def test_a_worker_dying_under_a_waiting_caller_fails_that_task_and_nothing_hangs(
    start_method: str, worker_count: int
) -> None:
    """Sequential round trips of a tiny kind: the waiting caller's thread reads each
    result itself (Supervisor.collect); a worker dying meanwhile is still reported."""
    config = plain_config(worker_count=worker_count, start_method=start_method)
    with TaskManager(config) as manager:
        for i in range(1, 10):
            assert manager.queue_task(ft.chaos, i).result(timeout=30) == 3 * i  # tiny now
        for i in range(11, 45):
            future = manager.queue_task(ft.chaos, i)
            if i % 20 == 0:
                with pytest.raises(WorkerCrashedError):
                    future.result(timeout=30)
            elif i % 20 == 10:
                with pytest.raises(ValueError, match=f"bad item {i}"):
                    future.result(timeout=30)
            else:
                assert future.result(timeout=30) == 3 * i
        wait_until(base_restored(manager, worker_count))


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_workers_recycled_after_every_task_under_a_waiting_caller(start_method: str) -> None:
    """Each worker leaves after its task (Leaving, Goodbye, exit) while the caller reads."""
    config = plain_config(worker_count=2, start_method=start_method, max_tasks_per_worker=1)
    with TaskManager(config) as manager:
        assert [manager.queue_task(tasks.double, i).result(timeout=30)
                for i in range(30)] == [2 * i for i in range(30)]


@pytest.mark.parametrize("priority", [False, True])
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
@pytest.mark.parametrize("worker_count", [1, 2])
def test_after_a_caller_read_its_own_results_the_supervisor_hears_that_worker_again(
    start_method: str, worker_count: int, priority: bool
) -> None:
    """While a caller collects, the supervisor's wait() does not watch that pipe (one
    thread woken per result, not two); then it watches it again: the results of a kind
    not known to be tiny, which no caller collects, still arrive."""
    with TaskManager(plain_config(worker_count=worker_count,
                                  start_method=start_method)) as manager:
        queue = manager.queue_task_with_priority if priority else manager.queue_task
        for i in range(50):
            assert queue(tasks.double, i).result(timeout=30) == 2 * i  # tiny now
        slow = [queue(tasks.sleep_for, 0.01) for _ in range(2 * worker_count)]
        assert [f.result(timeout=30) for f in slow] == [0.01] * len(slow)
        assert manager.queue_task(tasks.double, 7).result(timeout=30) == 14


def test_a_waiting_caller_times_out_on_a_tiny_kind_that_turned_slow() -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:
        for _ in range(20):
            manager.queue_task(tasks.sleep_for, 0).result(timeout=30)  # a tiny kind
        slow = manager.queue_task(tasks.sleep_for, 0.5)
        started = monotonic()
        with pytest.raises(FuturesTimeoutError):
            slow.result(timeout=0.05)
        assert monotonic() - started < 0.4  # its own timeout, not the task's end
        assert slow.result(timeout=30) == 0.5


def test_a_killed_busy_worker_is_detected_quickly_and_replaced(tmp_path: Path) -> None:
    """What the OOM killer does: SIGKILL from outside, while a task runs."""
    gate = Gate(tmp_path)
    with TaskManager(plain_config(worker_count=1)) as manager:
        [pid] = manager.worker_pids()
        running = manager.queue_task(tasks.wait_gate, gate.path)
        queued = [manager.queue_task(tasks.double, i) for i in range(3)]
        gate.entered()
        os.kill(pid, signal.SIGKILL)
        killed_at = monotonic()
        error = running.exception(timeout=DETECT_WITHIN)
        assert monotonic() - killed_at < DETECT_WITHIN
        assert isinstance(error, WorkerCrashedError)
        assert (error.pid, error.signal_name) == (pid, "SIGKILL")
        assert "wait_gate" in error.task
        assert [f.result(timeout=30) for f in queued] == [0, 2, 4]  # untouched
        wait_until(base_restored(manager, 1))
        assert manager.worker_pids() != [pid]


def test_an_idle_worker_dying_is_replaced_and_fails_nothing() -> None:
    with TaskManager(plain_config(worker_count=2)) as manager:
        pids = manager.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        wait_gone(pids[0])
        wait_until(lambda: pids[0] not in manager.worker_pids())
        wait_until(base_restored(manager, 2))
        assert pids[1] in manager.worker_pids()
        assert list(manager.map(tasks.double, range(20))) == [i * 2 for i in range(20)]
        metrics = manager.metrics()
        assert metrics.total_tasks_failed == 0


def test_a_crashed_task_with_retries_left_runs_again(tmp_path: Path) -> None:
    def die_once(resource: Any, folder: str) -> int:
        marker = Path(folder, "died")
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    with TaskManager(plain_config(worker_count=1, max_retries=1)) as manager:
        [first] = manager.worker_pids()
        assert manager.queue_task(die_once, str(tmp_path)).result(timeout=30) != first
        always = manager.queue_task(ft.die, "SIGKILL")
        with pytest.raises(MaxRetriesExceededError, match="failed 2 times") as info:
            always.result(timeout=30)
        assert isinstance(info.value.__cause__, WorkerCrashedError)
        once = manager.queue_task_once(ft.die, "exit")
        assert isinstance(once.exception(timeout=30), WorkerCrashedError)  # never retried
        wait_until(base_restored(manager, 1))


def test_a_burst_worker_that_dies_is_not_replaced(tmp_path: Path) -> None:
    base_gate, burst_gate = Gate(tmp_path, "base"), Gate(tmp_path, "burst")
    config = plain_config(worker_count=1, max_worker_count=2, burst_interval=0.02)
    with TaskManager(config) as manager:
        [base_pid] = manager.worker_pids()
        on_base = manager.queue_task(tasks.wait_gate, base_gate.path)
        base_gate.entered()
        # A task nobody can take: the burst loop starts a worker for it.
        on_burst = manager.queue_task(ft.wait_gate_then_die, burst_gate.path, "SIGKILL")
        burst_gate.entered()
        assert manager.stats().burst_workers == 1
        burst_gate.open()
        assert isinstance(on_burst.exception(timeout=30), WorkerCrashedError)
        wait_until(lambda: manager.stats().burst_workers == 0)
        base_gate.open()
        assert on_base.result(timeout=30) == base_pid
        stats = manager.stats()
        assert (stats.base_workers, stats.burst_workers) == (1, 0)


def test_a_reserved_worker_dying_under_run_task() -> None:
    with TaskManager(plain_config(worker_count=1, resource_pool_size=1)) as manager:
        with pytest.raises(WorkerCrashedError, match="SIGKILL"):
            manager.run_task(ft.die, "SIGKILL")
        wait_until(lambda: manager.stats().available_resources == 1)
        assert manager.run_task(tasks.double, 4) == 8
        assert manager.stats().base_workers == 1


# == unhealthy resources =======================================================


def test_an_unhealthy_error_replaces_the_worker_and_retries_ahead_of_the_queue(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    config = marker_config(tmp_path, worker_count=1, max_retries=1,
                           check_health=ft.healthy_unless_processor_crash)
    with TaskManager(config) as manager:
        [first] = manager.worker_pids()
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        retried = manager.queue_task(ft.crash_first_attempt, str(tmp_path), "image-1")
        behind = [manager.queue_task(tasks.record, f"n{i}") for i in range(3)]
        gate.open()
        assert blocker.result(timeout=30) == first
        second = retried.result(timeout=30)
        assert second != first
        # The retry ran first on the new worker: the queued tasks came after it.
        assert [f.result(timeout=30) for f in behind] == [1, 2, 3]
        wait_until(lambda: f"destroy-{first}" in names(tmp_path, "destroy"))  # on_destroy ran
        wait_until(base_restored(manager, 1))
        assert manager.worker_pids() == [second]


def test_an_unhealthy_error_after_all_retries_raises_max_retries_exceeded(
    tmp_path: Path,
) -> None:
    config = marker_config(tmp_path, worker_count=1, max_retries=2,
                           check_health=ft.healthy_unless_processor_crash)
    with TaskManager(config) as manager:
        future = manager.queue_task(ft.crash_processor)
        with pytest.raises(MaxRetriesExceededError, match="failed 3 times") as info:
            future.result(timeout=30)
        assert isinstance(info.value.__cause__, ft.ProcessorCrash)
        wait_until(lambda: len(names(tmp_path, "destroy")) == 3)  # one resource per attempt
        wait_until(base_restored(manager, 1))
        assert manager.queue_task(tasks.double, 5).result(timeout=30) == 10


@pytest.mark.parametrize("max_retries", [0, 3])
def test_no_retry_possible_gives_the_task_its_own_error(tmp_path: Path, max_retries: int) -> None:
    """``*_once`` tasks, or max_retries=0: the task's own exception, no wrapper."""
    config = marker_config(tmp_path, worker_count=1, max_retries=max_retries,
                           check_health=ft.healthy_unless_processor_crash)
    with TaskManager(config) as manager:
        once = manager.queue_task_once(ft.crash_processor)
        assert isinstance(once.exception(timeout=30), ft.ProcessorCrash)
        priority_once = manager.queue_task_with_priority_once(ft.crash_processor)
        assert isinstance(priority_once.exception(timeout=30), ft.ProcessorCrash)
        # Each broke one worker and ran once (on_destroy may still be running: wait).
        wait_until(lambda: len(names(tmp_path, "destroy")) == 2)
        if max_retries == 0:
            plain = manager.queue_task(ft.crash_processor)
            assert isinstance(plain.exception(timeout=30), ft.ProcessorCrash)
        wait_until(base_restored(manager, 1))


def test_a_healthy_error_fails_only_its_future_and_the_worker_carries_on(
    tmp_path: Path,
) -> None:
    config = marker_config(tmp_path, worker_count=1, max_retries=3,
                           check_health=ft.healthy_unless_processor_crash)
    with TaskManager(config) as manager:
        [pid] = manager.worker_pids()
        failed = manager.queue_task(tasks.boom, "just this one")
        assert isinstance(failed.exception(timeout=30), tasks.BoomError)
        assert manager.queue_task(tasks.pid_of).result(timeout=30) == pid
        assert names(tmp_path, "destroy") == []
        assert manager.worker_pids() == [pid]


def test_check_health_raising_counts_as_unhealthy_and_is_logged(
    tmp_path: Path, logs: list[str]
) -> None:
    config = marker_config(tmp_path, worker_count=1,
                           check_health=ft.health_check_that_raises)
    with TaskManager(config) as manager:
        [pid] = manager.worker_pids()
        failed = manager.queue_task(tasks.boom, "probe me")
        assert isinstance(failed.exception(timeout=30), tasks.BoomError)
        wait_until(lambda: pid not in manager.worker_pids())  # it left...
        wait_until(base_restored(manager, 1))  # ...and was replaced
    assert f"destroy-{pid}" in names(tmp_path, "destroy")
    assert any("WARNING" in line and "check_health raised RuntimeError: health probe"
               " unavailable" in line for line in logs), logs


# == timeouts and cancelling ===================================================


def test_a_task_over_its_timeout_is_stopped_and_its_worker_replaced() -> None:
    with TaskManager(plain_config(worker_count=1, task_timeout=0.3)) as manager:
        [pid] = manager.worker_pids()
        slow = manager.queue_task(tasks.sleep_for, 60)
        queued = [manager.queue_task(tasks.double, i) for i in range(3)]
        error = slow.exception(timeout=30)
        assert isinstance(error, TaskTimeoutError) and isinstance(error, TimeoutError)
        assert "0.3 s" in str(error) and f"pid {pid}" in str(error)
        wait_gone(pid)
        assert [f.result(timeout=30) for f in queued] == [0, 2, 4]
        wait_until(base_restored(manager, 1))


def test_a_per_task_timeout_escalates_to_sigkill_and_others_keep_theirs() -> None:
    with TaskManager(plain_config(worker_count=2)) as manager:
        untimed = manager.queue_task(tasks.sleep_for, 0.5)  # no timeout: Config has none
        started = monotonic()
        stubborn = manager.submit(ft.ignore_sigterm_and_sleep, (60,), timeout=0.2)
        error = stubborn.exception(timeout=30)
        assert isinstance(error, TaskTimeoutError)
        assert monotonic() - started < 0.2 + DETECT_WITHIN
        quick = manager.submit(tasks.double, (4,), timeout=5)
        assert quick.result(timeout=30) == 8  # in time: a plain result
        assert untimed.result(timeout=30) == 0.5
        # The SIGTERM was ignored: SIGKILL followed, so the process is gone for sure.
        wait_until(base_restored(manager, 2))
        assert len(manager.worker_pids()) == 2


def test_cancel_removes_a_queued_task_and_only_terminate_stops_a_running_one(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    with TaskManager(plain_config(worker_count=1)) as manager:
        [pid] = manager.worker_pids()
        running = manager.queue_task(tasks.wait_gate, gate.path)
        queued = manager.queue_task(tasks.double, 1)
        gate.entered()
        assert queued.cancel() and queued.cancelled()
        assert not running.cancel()  # already running: plain cancel does nothing
        gate.open()
        assert running.result(timeout=30) == pid
        assert manager.stats().queued_tasks == 0

        stuck = manager.queue_task(tasks.sleep_for, 60)
        wait_until(lambda: manager.stats().busy_workers == 1)
        assert manager.cancel(stuck, terminate=True)
        with pytest.raises(CancelledError):
            stuck.result(timeout=30)
        wait_gone(pid)
        wait_until(base_restored(manager, 1))
        assert manager.queue_task(tasks.double, 2).result(timeout=30) == 4


# == recycling =================================================================


def test_max_tasks_per_worker_recycles_gracefully_and_loses_nothing(tmp_path: Path) -> None:
    config = marker_config(tmp_path, worker_count=2, max_tasks_per_worker=5)
    with TaskManager(config) as manager:
        futures = [manager.queue_task(tasks.pid_of) for _ in range(60)]
        pids = [f.result(timeout=30) for f in futures]
        assert all(count <= 5 for count in (pids.count(p) for p in set(pids)))
        assert len(set(pids)) >= 12
        wait_until(base_restored(manager, 2))
        assert list(manager.map(tasks.double, range(30))) == [i * 2 for i in range(30)]
    destroyed = {name.split("-")[1] for name in names(tmp_path, "destroy")}
    assert {str(p) for p in pids} <= destroyed  # every recycled worker ran on_destroy


def test_max_memory_per_worker_recycles_a_grown_worker() -> None:
    limit = 300 * 1024 * 1024
    config = plain_config(worker_count=1, on_create=ft.make_dict, max_memory_per_worker=limit)
    with TaskManager(config) as manager:
        [pid] = manager.worker_pids()
        assert manager.queue_task(ft.hold_memory, 10).result(timeout=30) == pid  # under
        assert manager.queue_task(tasks.pid_of).result(timeout=30) == pid
        assert manager.queue_task(ft.hold_memory, 400).result(timeout=30) == pid  # over
        following = [manager.queue_task(tasks.pid_of).result(timeout=30) for _ in range(3)]
        assert pid not in following  # recycled: a fresh worker runs them
        wait_until(base_restored(manager, 1))


# == on_create failing later ===================================================


def test_a_failing_replacement_backs_off_then_the_breaker_fails_queued_tasks(
    tmp_path: Path, logs: list[str]
) -> None:
    creates = tmp_path / "creates"
    creates.mkdir()
    config = plain_config(worker_count=1, on_create=ft.CreateAfterCount(str(creates), good=1))
    breaker = RestartBreaker(max_failures=3, window=30.0, base_delay=0.02, max_delay=0.2)
    with TaskManager(config, _breaker=breaker) as manager:
        crashed = manager.queue_task(ft.die, "exit")
        queued = [manager.queue_task(tasks.double, i) for i in range(4)]
        assert isinstance(crashed.exception(timeout=30), WorkerCrashedError)
        for future in queued:
            error = future.exception(timeout=30)
            assert isinstance(error, ResourceCreationError)
            assert "licence server refused seat" in str(error)
            assert "in __call__" in error.remote_traceback  # the worker's traceback
        attempts = len(os.listdir(creates))
        assert attempts >= 1 + 3
        assert manager.stats().active_workers == 0
    assert any("on_create keeps failing" in line for line in logs)


def test_the_pool_heals_when_on_create_works_again(tmp_path: Path) -> None:
    creates = tmp_path / "creates"
    creates.mkdir()
    make = ft.CreateAfterCount(str(creates), good=1, heal=str(tmp_path / "healed"))
    breaker = RestartBreaker(max_failures=2, window=30.0, base_delay=0.02, max_delay=0.1)
    with TaskManager(plain_config(worker_count=1, on_create=make), _breaker=breaker) as manager:
        crashed = manager.queue_task(ft.die, "SIGKILL")
        lost = manager.queue_task(tasks.double, 1)
        assert isinstance(crashed.exception(timeout=30), WorkerCrashedError)
        assert isinstance(lost.exception(timeout=30), ResourceCreationError)
        (tmp_path / "healed").touch()
        wait_until(base_restored(manager, 1))
        assert manager.queue_task(tasks.double, 2).result(timeout=30) == 4


def test_burst_workers_whose_on_create_fails_back_off_instead_of_spinning(
    tmp_path: Path,
) -> None:
    """The base worker is fine, so nothing fails; but burst starts must not spin."""
    creates = tmp_path / "creates"
    creates.mkdir()
    gate = Gate(tmp_path)
    config = plain_config(worker_count=1, max_worker_count=3, burst_interval=0.01,
                          on_create=ft.CreateAfterCount(str(creates), good=1),
                          start_method="fork")  # a failed start costs ~ms: spinning would show
    breaker = RestartBreaker(max_failures=100, window=30.0, base_delay=0.1, max_delay=1.0)
    with TaskManager(config, _breaker=breaker) as manager:
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        started = monotonic()
        backlog = [manager.queue_task(tasks.double, i) for i in range(5)]
        wait_until(lambda: len(os.listdir(creates)) >= 1 + 5, timeout=30)  # 5 burst starts
        # Two may start together before the first failure; after it, one at a time with
        # backoff: 0.2 + 0.4 + 0.8 s before the fifth at least (without it: ~10 ms each).
        assert monotonic() - started >= 1.0
        assert not any(f.done() for f in backlog)  # a base worker is alive: nothing fails
        gate.open()
        assert blocker.result(timeout=30) and [f.result(timeout=30) for f in backlog] == [
            0, 2, 4, 6, 8]
        assert manager.stats().base_workers == 1


# == bad input =================================================================


def test_an_unpicklable_argument_fails_its_future_naming_it() -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:
        learn_tiny_tasks(manager)
        lock = threading.Lock()
        futures = [manager.queue_task(ft.identity, v) for v in (1, 2)]
        futures += [manager.queue_task(ft.identity, lock)]
        futures += [manager.submit(ft.identity, (), {"value": lock})]
        futures += [manager.queue_task(ft.identity, v) for v in (4, 5)]
        bad_positional, bad_keyword = futures[2].exception(30), futures[3].exception(30)
        assert isinstance(bad_positional, TaskPicklingError)
        assert "positional argument 0" in str(bad_positional)
        assert "lock" in str(bad_positional)
        assert isinstance(bad_keyword, TaskPicklingError)
        assert "keyword argument 'value'" in str(bad_keyword)
        assert [futures[i].result(timeout=30) for i in (0, 1, 4, 5)] == [1, 2, 4, 5]

        def uses_lock(resource: Any) -> bool:
            return lock.locked()

        bad_function = manager.queue_task(uses_lock).exception(timeout=30)
        assert isinstance(bad_function, TaskPicklingError)
        assert "the function" in str(bad_function) and "uses_lock" in str(bad_function)
        assert manager.worker_pids() and manager.stats().base_workers == 1


def test_run_task_with_an_unpicklable_argument_leaves_no_temporary_worker() -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:  # no reserved worker
        [base] = manager.worker_pids()
        with pytest.raises(TaskPicklingError, match="positional argument 0"):
            manager.run_task(ft.identity, threading.Lock())
        wait_until(lambda: manager.worker_pids() == [base])  # the temporary one left
        assert manager.run_task(ft.identity, 7) == 7


def test_an_argument_that_cannot_be_loaded_in_the_worker_is_isolated() -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:
        learn_tiny_tasks(manager)
        values: list[Any] = [1, 2, ft.LoadBomb(), 4, 5]
        futures = [manager.queue_task(ft.identity, v) for v in values]
        error = futures[2].exception(timeout=30)
        assert isinstance(error, TaskPicklingError)
        assert "could not be unpickled in the worker" in str(error)
        assert "this argument cannot be loaded" in str(error)
        assert [futures[i].result(timeout=30) for i in (0, 1, 3, 4)] == [1, 2, 4, 5]


def test_an_argument_that_kills_the_worker_while_loading_is_found_and_blamed() -> None:
    """No endless crash loop: the batch is re-sent one task at a time, and the lone
    task that still kills its worker fails; the others in its batch succeed."""
    with TaskManager(plain_config(worker_count=1)) as manager:
        learn_tiny_tasks(manager)
        values: list[Any] = [1, 2, ft.KillOnLoad(), 4, 5]
        futures = [manager.queue_task(ft.identity, v) for v in values]
        error = futures[2].exception(timeout=30)
        assert isinstance(error, WorkerCrashedError) and error.exitcode == 9
        assert "while loading its arguments" in str(error)
        assert [futures[i].result(timeout=30) for i in (0, 1, 3, 4)] == [1, 2, 4, 5]
        wait_until(base_restored(manager, 1))


def test_an_unpicklable_result_fails_that_future_naming_the_type() -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:
        learn_tiny_tasks(manager)
        futures = [manager.queue_task(ft.return_lock, v) for v in (1, 2, -1, 4, 5)]
        error = futures[2].exception(timeout=30)
        assert isinstance(error, TaskPicklingError)
        assert "cannot be pickled" in str(error) and "_thread.lock" in str(error)
        assert [futures[i].result(timeout=30) for i in (0, 1, 3, 4)] == [1, 2, 4, 5]
        assert manager.stats().base_workers == 1


def test_a_worker_dying_outside_any_task_cannot_loop_forever() -> None:
    """Its result kills the worker while it is sent: nobody is running, nobody to blame."""
    with TaskManager(plain_config(worker_count=1)) as manager:
        doomed = manager.queue_task(ft.return_kill_on_pickle, -1)
        error = doomed.exception(timeout=60)
        assert isinstance(error, WorkerCrashedError)
        assert "3 workers that died" in str(error)
        assert error.exitcode == 7
        assert manager.queue_task(ft.return_kill_on_pickle, 5).result(timeout=30) == 5
        wait_until(base_restored(manager, 1))


@pytest.mark.parametrize(
    ("fn", "type_name", "text"),
    [
        (ft.raise_unpicklable, "UnpicklableError", "cannot send -1"),  # cannot be pickled
        (ft.raise_needs_two_args, "NeedsTwoArgsError", "rejected (code -1)"),  # nor unpickled
    ],
)
def test_an_exception_that_cannot_travel_arrives_as_remote_error(
    fn: Callable[[Any, int], int], type_name: str, text: str
) -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:
        [pid] = manager.worker_pids()
        learn_tiny_tasks(manager)
        futures = [manager.queue_task(fn, v) for v in (1, 2, -1, 4, 5)]
        error = futures[2].exception(timeout=30)
        assert isinstance(error, RemoteError)
        assert (error.type_name, error.text) == (type_name, text)
        assert fn.__name__ in error.traceback_text
        assert [futures[i].result(timeout=30) for i in (0, 1, 3, 4)] == [1, 2, 4, 5]
        assert manager.worker_pids() == [pid]


@pytest.mark.parametrize(
    ("fn", "raised"),
    [(ft.call_sys_exit, SystemExit), (ft.raise_keyboard_interrupt, KeyboardInterrupt)],
)
def test_sys_exit_and_keyboard_interrupt_in_a_task_are_plain_errors(
    fn: Callable[[Any, int], int], raised: type[BaseException]
) -> None:
    with TaskManager(plain_config(worker_count=1)) as manager:
        [pid] = manager.worker_pids()
        learn_tiny_tasks(manager)
        futures = [manager.queue_task(fn, v) for v in (1, -1, 2)]
        assert isinstance(futures[1].exception(timeout=30), raised)
        assert [futures[i].result(timeout=30) for i in (0, 2)] == [pid, pid]  # it survived
        assert manager.worker_pids() == [pid]


def test_on_destroy_raising_is_logged_never_fatal(logs: list[str]) -> None:
    config = plain_config(worker_count=1, on_destroy=ft.destroy_raises, max_tasks_per_worker=2)
    with TaskManager(config) as manager:
        pids = [manager.queue_task(tasks.pid_of).result(timeout=30) for _ in range(4)]
        assert len(set(pids)) == 2  # recycled once: on_destroy raised, the pool went on
        wait_until(lambda: pids[-1] not in manager.worker_pids())  # recycled again...
        wait_until(base_restored(manager, 1))  # ...and replaced: a third worker
    assert manager.stopped
    warnings = [line for line in logs if "on_destroy raised RuntimeError: socket already"
                " closed" in line]
    assert len(warnings) == 3 and all(line.startswith("WARNING") for line in warnings)


# == stop(timeout=) ============================================================


def test_a_stop_that_outlasts_its_timeout_kills_and_says_so(
    tmp_path: Path, logs: list[str]
) -> None:
    gate = Gate(tmp_path)
    manager = TaskManager(plain_config(worker_count=1))
    running = manager.queue_task(tasks.wait_gate, gate.path)
    gate.entered()
    with open(gate.path, "w"):  # the task stays on its gate through the stop
        started = monotonic()
        manager.stop(timeout=0.3)
        assert monotonic() - started < 0.3 + DETECT_WITHIN
    assert manager.stopped
    assert running.exception(timeout=0) is not None
    assert any(line.startswith("WARNING") and "did not finish within 0.3 s; killing" in line
               for line in logs)


# == supervisor death ==========================================================

_ORPHAN_SCRIPT = """
import json, sys, time
sys.path.insert(0, {root!r})
from procpool import Config, TaskManager
from tests import tasks

if __name__ == "__main__":
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=1,
                    start_method={start_method!r})
    manager = TaskManager(config)
    if {busy!r}:
        running = [manager.queue_task(tasks.sleep_for, 600) for _ in range(2)]
        while manager.stats().busy_workers < 2:
            time.sleep(0.005)
    helpers = [p["pid"] for p in manager.dump_stats()["processes"] if p["role"] == "fork-server"]
    print(json.dumps([manager.worker_pids(), helpers]), flush=True)
    sys.stdin.read()  # hold still until the test kills this process
"""


@pytest.mark.parametrize(
    ("start_method", "busy"),
    [("forkserver", False), ("forkserver", True), ("fork", True), ("spawn", True)],
)
def test_workers_exit_soon_after_the_supervisor_process_is_killed(
    tmp_path: Path, start_method: str, busy: bool
) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_ORPHAN_SCRIPT).format(
        root=str(ROOT), start_method=start_method, busy=busy))
    app = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        assert app.stdout is not None
        pids, helpers = json.loads(app.stdout.readline())
        assert len(pids) == 3
        assert len(helpers) == (1 if start_method == "forkserver" else 0)
        pids += helpers  # the fork server leaves too
        app.kill()
        app.wait()
        killed_at = monotonic()
        while not all(_exited(pid) for pid in pids) and monotonic() - killed_at < 2.0:
            sleep(0.01)
        alive = [pid for pid in pids if not _exited(pid)]
        assert alive == [], f"workers still running {monotonic() - killed_at:.2f} s later"
    finally:
        app.kill()
        app.wait()
        for stream in (app.stdin, app.stdout):
            if stream is not None:
                stream.close()


# == chaos =====================================================================


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_chaos_every_future_resolves_and_only_the_crash_tasks_fail(start_method: str) -> None:
    count = 5000
    # Both start a replacement in ~10 ms (forkserver: forked by the pool's fork server),
    # so 250 of them stay quick.
    config = plain_config(worker_count=3, max_retries=0, start_method=start_method)
    with TaskManager(config) as manager:
        futures = [manager.queue_task(ft.chaos, i) for i in range(count)]
        _, not_done = wait(futures, timeout=120)
        assert not not_done
        crashed = raised = 0
        for i, future in enumerate(futures):
            error = future.exception()
            if i % 20 == 0:
                assert isinstance(error, WorkerCrashedError), (i, error)
                assert error.task == f"task {i + 1} (chaos)"  # the culprit, never a bystander
                assert error.exitcode == (-signal.SIGKILL if i % 40 == 0 else 3)
                crashed += 1
            elif i % 20 == 10:
                assert isinstance(error, ValueError) and str(error) == f"bad item {i}"
                raised += 1
            else:
                assert error is None and future.result() == i * 3, (i, error)
        assert (crashed, raised) == (count // 20, count // 20)
        wait_until(base_restored(manager, 3))


# == the example ===============================================================


def test_the_health_and_retries_example() -> None:
    started = monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "health_and_retries.py")],
                          capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                          check=False)
    assert done.returncode == 0, done.stderr
    # ~1 s on an idle 2-core machine; the bound leaves room for a loaded one.
    assert monotonic() - started < 20
    out = done.stdout
    assert "procpool: retrying task 1 (process) ahead of the queue (retry 1 of 1)" in out
    assert "procpool: starting a replacement base worker" in out
    assert "retried task: processed photo-1.png" in out
    assert "at-most-once task failed: ProcessorCrash: processor crash on photo-2.png" in out
    assert "a third task: processed photo-1.png" in out
    assert "retries: 1, base workers: 2" in out
    assert out.count("started processor") >= 3  # 2 first workers + at least 1 replacement
    assert out.count("processor released") == out.count("started processor")

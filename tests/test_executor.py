"""procpool.Executor: the concurrent.futures contract, and the one difference (crashes).

CPython's own executor tests run against it too: scripts/cpython_conformance.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import multiprocessing
from concurrent.futures import BrokenExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

import procpool
from procpool import Executor, TaskTimeoutError, WorkerCrashedError
from procpool.supervisor.bursting import usable_cores
from tests import executor_tasks as et

WITHIN = 30.0


def test_max_workers_is_checked_and_defaults_to_the_usable_cores() -> None:
    for number in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(max_workers=number)
    assert Executor()._config.worker_count == usable_cores()
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        Executor(max_tasks_per_child=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        Executor(initializer="not callable")  # type: ignore[arg-type]


def test_mp_context_takes_a_context_or_a_start_method_name() -> None:
    assert Executor(1, multiprocessing.get_context("spawn"))._config.start_method == "spawn"
    assert Executor(1, "fork")._config.start_method == "fork"
    assert Executor(1)._config.start_method is None
    with pytest.raises(TypeError, match="mp_context"):
        Executor(1, mp_context=42)


def test_burst_and_timeout_options_reach_the_pool() -> None:
    config = Executor(2, max_burst_workers=3, burst_interval=0.5, task_timeout=9)._config
    assert (config.worker_count, config.max_worker_count, config.burst_interval,
            config.task_timeout) == (2, 5, 0.5, 9)


@pytest.mark.timeout(60)
def test_submit_passes_every_argument_even_ones_named_fn(start_method: str) -> None:
    with Executor(2, start_method) as executor:
        assert executor.submit(pow, 2, 8).result(timeout=WITHIN) == 256
        future = executor.submit(et.capture, 1, self=2, fn=3)
        assert future.result(timeout=WITHIN) == ((1,), {"self": 2, "fn": 3})
        assert executor.submit(lambda x: x + 1, 41).result(timeout=WITHIN) == 42
        with pytest.raises(TypeError):
            executor.submit(fn=et.capture)  # type: ignore[call-arg]


@pytest.mark.timeout(60)
def test_map_is_lazy_ordered_and_raises_at_the_failing_item(start_method: str) -> None:
    with Executor(2, start_method) as executor:
        assert list(executor.map(pow, range(10), range(10), chunksize=3)) == [
            pow(i, i) for i in range(10)]
        results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
        assert [next(results), next(results)] == [(0, 1), (0, 1)]
        with pytest.raises(ZeroDivisionError):
            next(results)
        endless = executor.map(abs, itertools.count(), buffersize=8)
        assert list(itertools.islice(endless, 100)) == list(range(100))
        with pytest.raises(concurrent.futures.TimeoutError):  # TimeoutError from 3.11
            list(executor.map(et.slow, [0, 0, 5], timeout=1))
        with pytest.raises(ValueError, match="buffersize"):
            executor.map(abs, [1], buffersize=0)
        with pytest.raises(TypeError, match="buffersize"):
            executor.map(abs, [1], buffersize=1.5)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_shutdown_refuses_new_work_and_cancel_futures_cancels_the_queue(
    start_method: str,
) -> None:
    executor = Executor(1, start_method)
    futures = [executor.submit(et.slow, 0.05) for _ in range(40)]
    executor.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) > 20
    assert all(f.done() and f.exception() is None for f in futures if not f.cancelled())
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(pow, 2, 3)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.map(abs, [1])
    executor.shutdown()  # idempotent


@pytest.mark.timeout(60)
def test_shutdown_without_wait_returns_at_once_and_the_work_still_finishes(
    start_method: str,
) -> None:
    executor = Executor(1, start_method)
    future = executor.submit(et.slow, 0.3)
    executor.shutdown(wait=False)
    assert not future.done()
    assert future.result(timeout=WITHIN) == 0.3
    executor.manager.stop()  # for the leak check: wait until every worker left


@pytest.mark.timeout(60)
def test_the_initializer_runs_once_in_every_worker(start_method: str, tmp_path: Path) -> None:
    with Executor(2, start_method, et.init, (str(tmp_path), "initialized")) as executor:
        assert {executor.submit(et.status).result(timeout=WITHIN) for _ in range(10)} == {
            "initialized"}
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.timeout(60)
def test_a_failing_initializer_makes_the_executor_broken(start_method: str) -> None:
    executor = Executor(2, start_method, et.init_fail)
    with pytest.raises(BrokenExecutor, match="error in initializer"):
        executor.submit(et.status)
    assert executor._broken
    with pytest.raises(BrokenProcessPool):
        executor.submit(et.status)
    assert issubclass(procpool.BrokenPoolError, BrokenExecutor)
    executor.shutdown()


@pytest.mark.timeout(60)
def test_futures_work_with_wait_as_completed_and_asyncio(start_method: str) -> None:
    with Executor(2, start_method) as executor:
        futures = [executor.submit(et.slow, s) for s in (0.2, 0.01)]
        done, _ = wait(futures, timeout=WITHIN, return_when=concurrent.futures.FIRST_COMPLETED)
        assert futures[1] in done
        assert sorted(f.result() for f in as_completed(futures, timeout=WITHIN)) == [0.01, 0.2]

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            wrapped = asyncio.wrap_future(executor.submit(pow, 3, 2))
            in_executor = loop.run_in_executor(executor, pow, 2, 5)
            return list(await asyncio.gather(wrapped, in_executor))

        assert asyncio.run(main()) == [9, 32]


@pytest.mark.timeout(60)
def test_a_crash_fails_only_its_future_and_the_executor_keeps_serving(
    start_method: str,
) -> None:
    with Executor(2, start_method) as executor:
        crashed = executor.submit(et.die)
        others = [executor.submit(pow, 2, i) for i in range(20)]
        error = crashed.exception(timeout=WITHIN)
        assert isinstance(error, WorkerCrashedError)
        assert isinstance(error, BrokenProcessPool)  # an existing except clause still catches it
        assert [f.result(timeout=WITHIN) for f in others] == [2 ** i for i in range(20)]
        assert executor.submit(pow, 2, 10).result(timeout=WITHIN) == 1024


@pytest.mark.timeout(60)
def test_max_tasks_per_child_recycles_and_task_timeout_fails_one_future(
    start_method: str,
) -> None:
    with Executor(1, start_method, max_tasks_per_child=1, task_timeout=0.5) as executor:
        pids = [executor.submit(et.pid).result(timeout=WITHIN) for _ in range(3)]
        assert len(set(pids)) == 3
        with pytest.raises(TaskTimeoutError):
            executor.submit(et.slow, 30).result(timeout=WITHIN)
        assert executor.submit(pow, 2, 2).result(timeout=WITHIN) == 4

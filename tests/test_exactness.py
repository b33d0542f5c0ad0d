"""Exact under load: strict priority after tiny tasks, no needless re-runs, a lazy
``map``, memory given back, no orphans, and a ``worker_pids()`` without races.

Tasks record their own runs (a file per run) so that "ran once" is counted,
not assumed. Every test runs under ``fork`` and ``forkserver``.
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from time import monotonic

import psutil
import pytest

from procpool import TaskManager, TaskPicklingError, TaskTimeoutError, WorkerCrashedError
from procpool.mapping import TASKS_AHEAD_PER_WORKER
from tests import exact_tasks as et
from tests import tasks
from tests.gate import Gate
from tests.polling import wait_until
from tests.pools import pool_config as config
from tests.processes import exited as gone

ROOT = Path(__file__).parent.parent

#: Far above what the pool needs, so a loaded CI machine never makes a test flaky.
WITHIN = 10.0


def runs(folder: Path) -> Counter[str]:
    """How many times each tagged task ran (tests.exact_tasks.noted)."""
    return Counter(p.name.split("-")[1] for p in folder.iterdir() if p.name.startswith("ran-"))


# == 1. the depth follows the tasks running now ================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [2, 3])
@pytest.mark.parametrize("tiny_first", [0, 3, 2000])
def test_millisecond_tasks_spread_over_every_worker_even_after_tiny_ones(
    start_method: str, worker_count: int, tiny_first: int
) -> None:
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        tiny = manager.map(tasks.double, range(tiny_first), chunksize=1)
        assert len(list(tiny)) == tiny_first
        futures = [manager.queue_task(et.spin, 0.004) for _ in range(50)]
        per_worker = Counter(f.result(timeout=WITHIN)[0] for f in futures)
    assert len(per_worker) == worker_count
    assert min(per_worker.values()) >= 50 // worker_count // 3, per_worker


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
@pytest.mark.parametrize("tiny_first", [0, 3, 2000])
def test_a_priority_task_waits_behind_at_most_one_running_and_one_held_task_per_worker(
    start_method: str, worker_count: int, tiny_first: int
) -> None:
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        tiny = manager.map(tasks.double, range(tiny_first), chunksize=1)
        assert len(list(tiny)) == tiny_first
        normal = [manager.queue_task(et.spin, 0.004) for _ in range(100)]
        queued_at = monotonic()
        urgent = manager.queue_task_with_priority(et.spin, 0.004)
        _, urgent_start = urgent.result(timeout=WITHIN)
        starts = [f.result(timeout=WITHIN)[1] for f in normal]
    # Normal tasks that started after the priority task was queued and before it ran:
    # at most the one each worker held behind its running task as it arrived.
    jumped = sum(1 for start in starts if queued_at < start < urgent_start)
    assert jumped <= 2 * worker_count, jumped


# == 2. no needless re-runs ====================================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_an_unreadable_result_fails_once_and_reruns_nothing(
    start_method: str, tmp_path: Path, warm: bool
) -> None:
    with TaskManager(config(start_method)) as manager:
        if warm:  # tiny tasks: results travel many to a message
            list(manager.map(tasks.double, range(2000), chunksize=1))
        futures = [manager.queue_task(et.unreadable_if, str(tmp_path), i, i == 7)
                   for i in range(40)]
        error = futures[7].exception(timeout=WITHIN)
        assert isinstance(error, TaskPicklingError)
        assert "could not be unpickled here" in str(error)
        assert "this result cannot be read here" in str(error)
        assert [f.result(timeout=WITHIN) for i, f in enumerate(futures) if i != 7] == [
            i for i in range(40) if i != 7]
    assert runs(tmp_path) == Counter({str(i): 1 for i in range(40)})


@pytest.mark.timeout(60)
def test_a_task_that_closes_its_workers_pipe_is_blamed_at_its_first_run(
    start_method: str, tmp_path: Path
) -> None:
    with TaskManager(config(start_method, worker_count=1)) as manager:
        failed = manager.queue_task(et.close_my_fds, str(tmp_path))
        error = failed.exception(timeout=WITHIN)
        assert isinstance(error, WorkerCrashedError)
        assert "close_my_fds" in str(error)
        assert manager.queue_task(tasks.double, 4).result(timeout=WITHIN) == 8
    assert runs(tmp_path) == Counter({"close": 1})


# == 3. map is lazy ============================================================


def counted(source: Iterator[int], pulled: list[int]) -> Iterator[int]:
    for item in source:
        pulled[0] += 1
        yield item


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [1, 7])
def test_map_over_an_endless_generator_reads_a_bounded_window_ahead(
    start_method: str, chunksize: int
) -> None:
    pulled = [0]
    with TaskManager(config(start_method)) as manager:
        results = manager.map(tasks.double, counted(itertools.count(), pulled),
                              chunksize=chunksize)
        taken = list(itertools.islice(results, 5000))
        assert taken == [2 * i for i in range(5000)]
        window = TASKS_AHEAD_PER_WORKER * 2 * chunksize
        assert pulled[0] <= 5000 + window + chunksize
        results.close()  # what `break` does to a for loop's iterator, once it is dropped
        stopped_at = pulled[0]
        wait_until(lambda: manager.stats().queued_tasks == 0, WITHIN)
        assert manager.queue_task(tasks.double, 1).result(timeout=WITHIN) == 2
    assert pulled[0] == stopped_at  # nothing more was read


@pytest.mark.timeout(60)
def test_breaking_out_of_map_cancels_what_is_queued(start_method: str) -> None:
    with TaskManager(config(start_method, worker_count=1)) as manager:
        for value in manager.map(et.spin, itertools.repeat(0.001)):
            assert value[1] > 0
            break
        wait_until(lambda: manager.stats().queued_tasks == 0, WITHIN)


@pytest.mark.timeout(60)
def test_map_keeps_order_and_raises_at_the_failing_item(start_method: str) -> None:
    with TaskManager(config(start_method)) as manager:
        results = manager.map(tasks.add, range(600), [1] * 599 + ["x"])  # type: ignore[list-item]
        assert list(itertools.islice(results, 599)) == [i + 1 for i in range(599)]
        with pytest.raises(TypeError):
            next(results)
        with pytest.raises(StopIteration):
            next(results)


# == 4. memory is given back ===================================================


@pytest.mark.timeout(60)
def test_nothing_of_a_task_stays_referenced_once_its_future_is_dropped(
    start_method: str,
) -> None:
    with TaskManager(config(start_method)) as manager:
        gc.disable()  # no help from the cycle collector: plain reference counting
        try:
            payload = et.Weighty(1000)
            sent = weakref.ref(payload)
            future = manager.queue_task(et.size_of, payload)
            del payload
            assert future.result(timeout=WITHIN) == 1000
            result = manager.queue_task(et.make_weighty, 1000).result(timeout=WITHIN)
            received = weakref.ref(result)
            del future, result
            assert sent() is None
            assert received() is None
        finally:
            gc.enable()


@pytest.mark.timeout(120)
def test_finished_tasks_leave_no_reference_cycle(start_method: str) -> None:
    """Plain reference counting frees every task: the cyclic collector finds none of
    procpool's objects. (What other threads of the test process leave meanwhile, say an
    earlier test's pool finishing its stop, is not counted: only procpool's own types.)"""
    with TaskManager(config(start_method)) as manager:
        for f in [manager.queue_task(tasks.double, i) for i in range(200)]:
            f.result(timeout=WITHIN)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage
        try:
            futures = [manager.queue_task(tasks.double, i) for i in range(10_000)]
            assert [f.result(timeout=WITHIN) for f in futures][-1] == 19_998
            assert sum(manager.map(tasks.double, range(5_000), chunksize=10)) == 24_995_000
            assert sum(manager.map(tasks.double, range(5_000))) == 24_995_000
            del futures
            gc.collect()
            ours = [type(o).__qualname__ for o in gc.garbage
                    if type(o).__module__.startswith("procpool")]
            assert ours == [] and len(gc.garbage) < 1000, (ours[:10], len(gc.garbage))
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()


@pytest.mark.timeout(60)
def test_a_queued_task_costs_the_caller_under_a_kilobyte(tmp_path: Path) -> None:
    """Half of what every peer pool spends (~2 KB): no Condition until one is needed."""
    import tracemalloc

    gate = Gate(tmp_path)
    with TaskManager(config("forkserver", worker_count=1)) as manager:
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        args = [(i,) for i in range(20_000)]  # the caller's own arguments, made before
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            futures = [manager.queue_task(tasks.double, *a) for a in args]
            per_task = (tracemalloc.get_traced_memory()[0] - before) / len(futures)
        finally:
            tracemalloc.stop()
        assert per_task < 1000, per_task
        gate.open()
        blocker.result(timeout=WITHIN)
        assert futures[-1].result(timeout=WITHIN) == 2 * 19_999


@pytest.mark.timeout(60)
def test_a_future_waited_on_in_any_way_at_any_moment_is_woken() -> None:
    """Futures nobody waits on are resolved without a Condition; a waiter that comes
    while the pool resolves them (result, wait, as_completed, a callback) still wakes."""
    with TaskManager(config("forkserver")) as manager:
        futures = [manager.queue_task(tasks.double, i) for i in range(3000)]
        called = threading.Semaphore(0)

        def waiter(how: int) -> None:
            for i, f in enumerate(futures):
                if i % 4 != how:
                    continue
                if how == 0:
                    assert f.result(timeout=WITHIN) == 2 * i
                elif how == 1:
                    assert concurrent.futures.wait([f], timeout=WITHIN).done == {f}
                elif how == 2:
                    assert list(concurrent.futures.as_completed([f], timeout=WITHIN)) == [f]
                else:
                    f.add_done_callback(lambda _: called.release())

        threads = [threading.Thread(target=waiter, args=(how,)) for how in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WITHIN)
        assert not any(thread.is_alive() for thread in threads)
        for _ in range(len(futures) // 4):
            assert called.acquire(timeout=WITHIN)
        assert [f.result() for f in futures] == [2 * i for i in range(3000)]
        untouched = manager.queue_task(tasks.double, 1)
        wait_until(untouched.done, WITHIN)  # asking done() makes nothing
        assert untouched._made_condition is None  # resolved without a Condition
        assert untouched.result() == 2


@pytest.mark.timeout(10)
def test_a_finaliser_running_while_a_condition_is_made_may_touch_futures() -> None:
    """Making a future's Condition may collect garbage, and a dropped map's finaliser
    cancels its futures right there, on the same thread: that must not deadlock."""
    from procpool import tasks as procpool_tasks

    queued, running = procpool_tasks.TaskFuture(), procpool_tasks.TaskFuture()
    assert running.set_running_or_notify_cancel()
    with procpool_tasks._FIRST_USE:  # where the collector may run a finaliser
        assert queued.cancel() and not running.cancel()
        running.set_result(1)
    assert queued.cancelled() and running.result() == 1


@pytest.mark.timeout(60)
def test_a_big_result_is_freed_when_its_future_is_dropped(start_method: str) -> None:
    me = psutil.Process()
    with TaskManager(config(start_method, worker_count=1)) as manager:
        future = manager.queue_task(et.big_bytes, 300)
        assert len(future.result(timeout=WITHIN)) == 300 * 1024 * 1024
        held = me.memory_info().rss
        del future
        assert me.memory_info().rss < held - 200 * 1024 * 1024


# == 5. no orphans =============================================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["popen", "fork"])
def test_processes_a_task_started_go_when_the_pool_stops(start_method: str, how: str) -> None:
    with TaskManager(config(start_method)) as manager:
        child = manager.queue_task(et.start_child, how).result(timeout=WITHIN)
        assert not gone(child)
    wait_until(lambda: gone(child), WITHIN)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ending", ["killed", "timed out"])
def test_processes_a_task_started_go_with_its_worker(
    start_method: str, tmp_path: Path, ending: str
) -> None:
    with TaskManager(config(start_method, worker_count=1)) as manager:
        (worker,) = manager.worker_pids()
        future = manager.submit(et.start_child_then_sleep, ("popen", str(tmp_path)),
                                timeout=1.0 if ending == "timed out" else None)
        wait_until(lambda: any(tmp_path.iterdir()), WITHIN)
        child = int(next(tmp_path.iterdir()).name.split("-")[1])
        if ending == "killed":
            os.kill(worker, signal.SIGKILL)
        assert future.exception(timeout=WITHIN) is not None
        wait_until(lambda: gone(child), WITHIN)


@pytest.mark.timeout(60)
def test_a_child_in_a_session_of_its_own_is_left_alone(start_method: str) -> None:
    with TaskManager(config(start_method)) as manager:
        child = manager.queue_task(et.start_child, "session").result(timeout=WITHIN)
    try:
        assert not gone(child)
    finally:
        os.kill(child, signal.SIGKILL)


# == 6. fork: every manager's workers leave when the caller dies ================

_MANY_MANAGERS = """
import json, sys
sys.path.insert(0, {root!r})
from procpool import Config, TaskManager
from tests import tasks

if __name__ == "__main__":
    managers = [TaskManager(Config(on_create=tasks.make_plain, worker_count=2,
                                   resource_pool_size=1, start_method=method))
                for method in {methods!r}]
    print(json.dumps([pid for m in managers for pid in m.worker_pids()]), flush=True)
    sys.stdin.read()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("methods", [["fork"] * 3, ["fork", "forkserver", "fork"]])
def test_every_managers_workers_leave_soon_after_the_caller_is_killed(
    tmp_path: Path, methods: list[str]
) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_MANY_MANAGERS).format(root=str(ROOT), methods=methods))
    app = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        pids = json.loads(app.stdout.readline())
        assert len(pids) == 3 * len(methods)
        app.kill()
        app.wait()
        killed = monotonic()
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=2.0)
        assert monotonic() - killed < 2.0
    finally:
        app.kill()
        app.wait()
        for stream in (app.stdin, app.stdout):
            if stream is not None:
                stream.close()


# == 7. worker_pids() ===========================================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
def test_worker_pids_never_lists_a_leaving_worker(start_method: str, worker_count: int) -> None:
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        for _ in range(10):
            failed = manager.submit(tasks.sleep_for, (30,), timeout=0.05)
            assert failed.exception(timeout=WITHIN) is not None
            assert len(manager.worker_pids()) <= worker_count
            wait_until(lambda: manager.stats().active_workers == worker_count, WITHIN)
            assert len(manager.worker_pids()) == worker_count


# == 6. a submission that finds a worker idle sends its task itself ===============


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_count", [1, 2])
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_tasks_sent_to_an_idle_worker_from_the_callers_thread_keep_every_guarantee(
    start_method: str, worker_count: int, warm: bool
) -> None:
    """Round trips on an idle pool: normal, priority, and timed tasks (whose deadline the
    supervisor must still watch though it did not send them)."""
    with TaskManager(config(start_method, worker_count=worker_count)) as manager:
        if warm:
            assert sum(manager.map(tasks.double, range(2000))) == 2 * sum(range(2000))
        for i in range(200):
            assert manager.queue_task(tasks.double, i).result(timeout=WITHIN) == 2 * i
            assert manager.queue_task_with_priority(tasks.add, i, 1).result(timeout=WITHIN) == i + 1
        timed = manager.submit(tasks.sleep_for, (30,), timeout=0.2)
        assert isinstance(timed.exception(timeout=WITHIN), TaskTimeoutError)
        assert manager.queue_task(tasks.double, 4).result(timeout=WITHIN) == 8

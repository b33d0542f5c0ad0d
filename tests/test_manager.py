"""TaskManager core: resources, results, priorities, run_task, stop and kill."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

import procpool
from procpool import Config, ResourceCreationError, ShutdownError, TaskManager
from procpool.policy import prefetch
from tests import tasks
from tests.gate import Gate


def marker_config(folder: Path, **overrides: object) -> Config[tasks.Marker]:
    options: dict[str, object] = {
        "on_create": tasks.make_marker(str(folder)),
        "on_destroy": tasks.destroy_marker,
        "worker_count": 2,
        "resource_pool_size": 1,
    }
    options.update(overrides)
    return Config(**options)  # type: ignore[arg-type]


def files(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_results_resources_and_arguments_under_every_start_method(
    tmp_path: Path, start_method: str
) -> None:
    config = marker_config(tmp_path, start_method=start_method)
    with TaskManager(config) as manager:
        assert manager.queue_task(tasks.double, 21).result() == 42
        assert manager.submit(tasks.add, args=(1,), kwargs={"b": 2}).result() == 3
        offset = 10
        assert manager.queue_task(lambda res, x: x + offset, 5).result() == 15
        assert manager.run_task(tasks.add, 2, b=3) == 5
        pid = manager.queue_task(tasks.pid_of).result()
    assert f"create-{pid}" in files(tmp_path, "create")


def test_on_create_and_on_destroy_run_once_in_every_worker(tmp_path: Path) -> None:
    config = marker_config(tmp_path, worker_count=3, resource_pool_size=2)
    with TaskManager(config) as manager:
        list(manager.map(tasks.double, range(200)))
        assert len(files(tmp_path, "create")) == 5
        assert files(tmp_path, "destroy") == []
    created = [name.split("-")[1] for name in files(tmp_path, "create")]
    destroyed = [name.split("-")[1] for name in files(tmp_path, "destroy")]
    assert len(created) == 5
    assert sorted(created) == sorted(destroyed)


def test_task_exception_keeps_its_type_and_remote_traceback(tmp_path: Path) -> None:
    with TaskManager(marker_config(tmp_path)) as manager:
        future = manager.queue_task(tasks.boom, "bad input")
        with pytest.raises(tasks.BoomError, match="bad input") as info:
            future.result()
        assert isinstance(info.value.__cause__, procpool.RemoteTraceback)
        assert "in boom" in info.value.__cause__.text
        assert manager.queue_task(tasks.double, 2).result() == 4  # the worker carries on


def test_priority_tasks_all_start_before_normal_ones(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    config = marker_config(tmp_path, worker_count=1, resource_pool_size=0)
    with TaskManager(config) as manager:
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        normal = [manager.queue_task(tasks.record, f"n{i}") for i in range(5)]
        urgent = [manager.queue_task_with_priority(tasks.record, f"p{i}") for i in range(5)]
        urgent += [manager.queue_task_with_priority_once(tasks.record, "p5")]
        normal += [manager.queue_task_once(tasks.record, "n5")]
        assert manager.stats().priority_tasks == 6
        assert manager.stats().queued_tasks == 6
        gate.open()
        blocker.result()
        assert [f.result() for f in urgent] == [1, 2, 3, 4, 5, 6]
        assert [f.result() for f in normal] == [7, 8, 9, 10, 11, 12]


def test_priority_jumps_a_deep_queue_of_tiny_tasks(tmp_path: Path) -> None:
    """With prefetching, at most a bounded number of normal tasks start first."""
    gate = Gate(tmp_path)
    config = marker_config(tmp_path, worker_count=1, resource_pool_size=0)
    with TaskManager(config) as manager:
        list(manager.map(tasks.record, range(2000), chunksize=1))  # learn that tasks are tiny
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        normal = [manager.queue_task(tasks.record, i) for i in range(3000)]
        urgent = manager.queue_task_with_priority(tasks.record, "urgent")
        gate.open()
        blocker.result()
        position = urgent.result() - 2001  # tasks run since the blocker
        assert position <= prefetch.PREFETCH_LIMIT + 1
        assert all(f.result() for f in normal)


def test_run_task_bypasses_the_queue_on_a_reserved_then_temporary_worker(tmp_path: Path) -> None:
    base_gate = Gate(tmp_path, "base")
    reserved_gate = Gate(tmp_path, "reserved")
    config = marker_config(tmp_path, worker_count=1, resource_pool_size=1)
    with TaskManager(config) as manager:
        base_pid = manager.queue_task(tasks.pid_of).result()
        blocked = manager.queue_task(tasks.wait_gate, base_gate.path)
        queued = [manager.queue_task(tasks.double, i) for i in range(3)]
        base_gate.entered()
        with open(base_gate.path, "w"):  # the base worker is now stuck on its gate...
            # ...yet run_task answers at once, on the reserved worker.
            reserved_pid = manager.run_task(tasks.pid_of)
            assert reserved_pid != base_pid
            assert manager.stats().available_resources == 1
            holder = threading.Thread(
                target=manager.run_task, args=(tasks.wait_gate, reserved_gate.path)
            )
            holder.start()
            reserved_gate.entered()
            with open(reserved_gate.path, "w"):  # the reserved worker is stuck too
                assert manager.stats().available_resources == 0
                temporary_pid = manager.run_task(tasks.pid_of)
            holder.join()
        assert temporary_pid not in (base_pid, reserved_pid)
        assert blocked.result() == base_pid
        assert [f.result() for f in queued] == [0, 2, 4]
    assert f"create-{temporary_pid}" in files(tmp_path, "create")
    assert f"destroy-{temporary_pid}" in files(tmp_path, "destroy")


def test_run_task_with_no_reserved_resources_uses_a_temporary_worker(tmp_path: Path) -> None:
    config = marker_config(tmp_path, worker_count=1, resource_pool_size=0)
    with TaskManager(config) as manager:
        base_pid = manager.queue_task(tasks.pid_of).result()
        temporary_pid = manager.run_task(tasks.pid_of)
        assert temporary_pid != base_pid
        assert manager.stats().available_resources == 0
    assert f"create-{temporary_pid}" in files(tmp_path, "create")
    assert f"destroy-{temporary_pid}" in files(tmp_path, "destroy")


def test_stop_runs_every_queued_task_then_refuses_new_ones(tmp_path: Path) -> None:
    manager = TaskManager(marker_config(tmp_path, worker_count=2))
    futures = [manager.queue_task(tasks.sleep_for, 0.01) for _ in range(20)]
    manager.stop()
    assert all(f.result(timeout=0) == 0.01 for f in futures)
    assert manager.stopped
    with pytest.raises(ShutdownError):
        manager.queue_task(tasks.double, 1)
    with pytest.raises(RuntimeError):  # ShutdownError is also a RuntimeError
        manager.run_task(tasks.double, 1)
    manager.stop()  # idempotent
    assert len(files(tmp_path, "destroy")) == 3


def test_stop_from_many_threads_at_once(tmp_path: Path) -> None:
    manager = TaskManager(marker_config(tmp_path))
    futures = [manager.queue_task(tasks.double, i) for i in range(100)]
    threads = [threading.Thread(target=manager.stop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [f.result(timeout=0) for f in futures] == [i * 2 for i in range(100)]
    assert manager.stopped


def test_kill_cancels_queued_fails_running_and_leaves_no_process(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    manager = TaskManager(marker_config(tmp_path, worker_count=1))
    running = manager.queue_task(tasks.wait_gate, gate.path)
    queued = [manager.queue_task(tasks.double, i) for i in range(5)]
    gate.entered()
    with open(gate.path, "w"):  # opening waits until the task is on the gate
        manager.kill()
    with pytest.raises(ShutdownError):
        running.result(timeout=0)
    for future in queued:
        with pytest.raises(CancelledError):
            future.result(timeout=0)
    assert manager.stopped
    manager.kill()  # idempotent
    manager.stop()  # and stop after kill is harmless
    assert files(tmp_path, "destroy") == []  # no graceful exit on kill


def test_kill_during_a_stop_that_waits(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    manager = TaskManager(marker_config(tmp_path, worker_count=1))
    running = manager.queue_task(tasks.wait_gate, gate.path)
    gate.entered()
    with open(gate.path, "w"):
        stopper = threading.Thread(target=manager.stop)
        stopper.start()
        manager.kill()
        stopper.join()
    with pytest.raises(ShutdownError):
        running.result(timeout=0)
    assert manager.stopped


def test_stop_timeout_escalates_to_kill(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    manager = TaskManager(marker_config(tmp_path, worker_count=1))
    running = manager.queue_task(tasks.wait_gate, gate.path)
    gate.entered()
    with open(gate.path, "w"):
        manager.stop(timeout=0.2)
    assert manager.stopped
    with pytest.raises(ShutdownError):
        running.result(timeout=0)


def test_failing_on_create_fails_the_constructor_and_leaves_nothing() -> None:
    config = Config(on_create=tasks.failing_create, worker_count=2)
    with pytest.raises(ResourceCreationError, match="licence server unreachable") as info:
        TaskManager(config)
    assert "failing_create" in info.value.remote_traceback
    assert "RuntimeError" in str(info.value)


def test_queued_future_cancel_removes_the_task(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    with TaskManager(marker_config(tmp_path, worker_count=1)) as manager:
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        doomed = manager.queue_task(tasks.record, "doomed")
        kept = manager.queue_task(tasks.record, "kept")
        assert doomed.cancel()
        assert manager.stats().queued_tasks == 1
        gate.open()
        blocker.result()
        assert kept.result() == 1  # the cancelled task never ran
        assert doomed.cancelled()


def test_map_keeps_order_with_and_without_chunks(tmp_path: Path) -> None:
    with TaskManager(marker_config(tmp_path)) as manager:
        assert list(manager.map(tasks.double, range(50))) == [i * 2 for i in range(50)]
        assert list(manager.map(tasks.add, range(10), range(10), chunksize=3)) == [
            i * 2 for i in range(10)
        ]
        with pytest.raises(ValueError, match="chunksize"):
            manager.map(tasks.double, [1], chunksize=0)


def test_stats_reports_workers_and_queues(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    with TaskManager(marker_config(tmp_path, worker_count=2, resource_pool_size=1)) as manager:
        stats = manager.stats()
        assert (stats.base_workers, stats.burst_workers, stats.active_workers) == (2, 0, 2)
        assert (stats.busy_workers, stats.available_resources) == (0, 1)
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        assert manager.stats().busy_workers == 1
        gate.open()
        blocker.result()


def test_asyncio_wrap_future_and_async_forms(tmp_path: Path) -> None:
    async def main(manager: TaskManager[tasks.Marker]) -> list[int]:
        wrapped = await asyncio.wrap_future(manager.queue_task(tasks.double, 1))
        together = await asyncio.gather(
            manager.queue_task_async(tasks.double, 2),
            manager.queue_task_with_priority_async(tasks.double, 3),
            manager.queue_task_once_async(tasks.double, 4),
            manager.queue_task_with_priority_once_async(tasks.double, 5),
            manager.run_task_async(tasks.double, 6),
        )
        return [wrapped, *together]

    with TaskManager(marker_config(tmp_path)) as manager:
        assert asyncio.run(main(manager)) == [2, 4, 6, 8, 10, 12]


def test_asyncio_cancel_of_an_await_cancels_the_queued_task(tmp_path: Path) -> None:
    gate = Gate(tmp_path)

    async def main(manager: TaskManager[tasks.Marker]) -> None:
        waiting = asyncio.ensure_future(manager.queue_task_async(tasks.record, "x"))
        await asyncio.sleep(0)  # let the task be queued
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    with TaskManager(marker_config(tmp_path, worker_count=1)) as manager:
        blocker = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        asyncio.run(main(manager))
        assert manager.stats().queued_tasks == 0
        gate.open()
        blocker.result()


def test_a_task_must_be_callable(tmp_path: Path) -> None:
    with TaskManager(marker_config(tmp_path)) as manager:
        with pytest.raises(TypeError, match="callable"):
            manager.queue_task(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            manager.submit(tasks.double, (1,), timeout=-1)

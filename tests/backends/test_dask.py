"""The Dask backend through TaskManager: the same API and guarantees as locally.

The contract itself is checked by test_conformance.py (the ``dask-local``
entry); here are the pool's promises on Dask: each task gets its worker's
resource, strict priority, a lost Dask worker, retries, timeouts, bursting
that scales a given cluster with every resource destroyed, and the missing
extra. test_dask_address.py runs a scheduler and workers as separate processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import pytest

from procpool import (
    Config,
    ShutdownError,
    TaskManager,
    TaskTimeoutError,
    WorkerCrashedError,
)
from tests import burst_tasks, dask_tasks, failure_tasks, tasks
from tests.gate import Gate

distributed = pytest.importorskip("distributed")

from procpool.backends.dask import DaskBackend  # noqa: E402 -- after the skip

WITHIN = 30.0


def wait_until(condition: Callable[[], bool], timeout: float = WITHIN) -> None:
    """Poll ``condition`` (stats and cluster sizes change without an event to wait on)."""
    deadline = monotonic() + timeout
    while not condition():
        assert monotonic() < deadline, "condition not met in time"
        sleep(0.02)


def created_and_destroyed(folder: Path) -> tuple[list[str], list[str]]:
    """Pids that left create-/destroy- files (tests.tasks.Marker)."""
    names = [p.name for p in folder.iterdir()]
    return (sorted(n.split("-")[1] for n in names if n.startswith("create-")),
            sorted(n.split("-")[1] for n in names if n.startswith("destroy-")))


def marker_config(folder: Path, **overrides: Any) -> Config[Any]:
    options: dict[str, Any] = {"on_create": tasks.make_marker(str(folder)),
                               "on_destroy": tasks.destroy_marker, "worker_count": 2,
                               "resource_pool_size": 0}
    options.update(overrides)
    return Config(**options)


def test_importing_procpool_never_imports_dask() -> None:
    code = ("import sys, procpool, procpool.backends, procpool.backends.base;"
            " assert not {'dask', 'distributed'} & set(sys.modules), 'dask was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    monkeypatch.delitem(sys.modules, "procpool.backends.dask")
    with pytest.raises(ImportError, match=r'pip install "procpool\[dask\]"'):
        import procpool.backends.dask  # noqa: F401


def test_address_and_cluster_are_one_or_the_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskBackend(address="tcp://127.0.0.1:1", cluster=object())
    with pytest.raises(ValueError, match="only without"):
        DaskBackend(address="tcp://127.0.0.1:1", memory_limit="1GB")


@pytest.mark.timeout(120)
def test_the_same_api_on_dask_and_every_resource_destroyed(tmp_path: Path) -> None:
    config = marker_config(tmp_path, resource_pool_size=1)
    with TaskManager(config, backend=DaskBackend()) as manager:
        assert manager.stats().base_workers == 2 and manager.stats().available_resources == 1
        assert len(manager.worker_pids()) == 3
        queued = [manager.queue_task(tasks.double, i) for i in range(20)]
        once = manager.queue_task_once(tasks.add, 1, b=2)
        submitted = manager.submit(tasks.add, (2,), {"b": 3}, priority=True, timeout=10)
        assert manager.run_task(tasks.double, 21) == 42
        assert list(manager.map(tasks.double, range(50), chunksize=4)) == [
            2 * i for i in range(50)]
        assert sorted(manager.map_unordered(tasks.double, range(30), chunksize=1)) == [
            2 * i for i in range(30)]
        assert [f.result(timeout=WITHIN) for f in queued] == [2 * i for i in range(20)]
        assert once.result(timeout=WITHIN) == 3 and submitted.result(timeout=WITHIN) == 5
        with pytest.raises(tasks.BoomError, match="bad input"):
            manager.queue_task(tasks.boom, "bad input").result(timeout=WITHIN)
        assert manager.metrics().total_tasks_completed >= 60
        dump = manager.dump_stats()
        workers = [p for p in dump["processes"] if p["worker_id"] is not None]
        assert sorted(p["pid"] for p in workers) == sorted(manager.worker_pids())
        assert all(p["rss_bytes"] for p in workers)  # local Dask workers: read with psutil
    assert manager.stopped
    created, destroyed = created_and_destroyed(tmp_path)
    assert len(created) >= 3 and created == destroyed


@pytest.mark.timeout(120)
def test_each_task_gets_the_resource_of_the_worker_it_runs_on() -> None:
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=0)
    with TaskManager(config, backend=DaskBackend()) as manager:
        results = [f.result(timeout=WITHIN) for f in
                   [manager.queue_task(dask_tasks.resource_pid, i) for i in range(200)]]
        pids = set(manager.worker_pids())
    assert all(made_in == runs_in for made_in, runs_in, _ in results)
    assert {runs_in for _, runs_in, _ in results} <= pids
    assert [x for _, _, x in results] == list(range(200))


@pytest.mark.timeout(120)
def test_priority_tasks_start_before_every_queued_normal_task(tmp_path: Path) -> None:
    config = Config(on_create=dask_tasks.make_log, worker_count=1, resource_pool_size=0)
    gate = Gate(tmp_path)
    with TaskManager(config, backend=DaskBackend()) as manager:
        busy = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()  # the one worker is busy; everything below waits in procpool's queues
        normal = [manager.queue_task(dask_tasks.note, f"normal-{i}") for i in range(5)]
        urgent = [manager.queue_task_with_priority(dask_tasks.note, f"urgent-{i}")
                  for i in range(5)]
        assert manager.stats().priority_tasks == 5
        gate.open()
        busy.result(timeout=WITHIN)
        order = sorted(f.result(timeout=WITHIN) for f in normal + urgent)
    ran = [line.split(". ")[1] for line in sorted(order, key=lambda s: int(s.split(".")[0]))]
    assert ran == [f"urgent-{i}" for i in range(5)] + [f"normal-{i}" for i in range(5)]


@pytest.mark.timeout(120)
def test_a_killed_dask_worker_fails_only_its_task_and_is_replaced(tmp_path: Path) -> None:
    config = marker_config(tmp_path, worker_count=1)
    gate = Gate(tmp_path, "gate-kill")
    with TaskManager(config, backend=DaskBackend()) as manager:
        (pid,) = manager.worker_pids()
        doomed = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        behind = manager.queue_task(tasks.double, 4)  # queued: must run on the replacement
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            doomed.result(timeout=WITHIN)
        assert behind.result(timeout=WITHIN) == 8
        (replacement,) = manager.worker_pids()
        assert replacement != pid
    created, destroyed = created_and_destroyed(tmp_path)
    assert set(created) - set(destroyed) == {str(pid)}  # killed: no on_destroy, as locally


@pytest.mark.timeout(120)
def test_a_task_whose_worker_dies_is_retried_on_another(tmp_path: Path) -> None:
    config = Config(on_create=tasks.make_plain, worker_count=1, resource_pool_size=0,
                    max_retries=1)
    with TaskManager(config, backend=DaskBackend()) as manager:
        first = manager.worker_pids()[0]
        ran_on = manager.queue_task(dask_tasks.die_first_time, str(tmp_path), "a")
        assert ran_on.result(timeout=WITHIN) != first
        assert manager.queue_task_once(failure_tasks.die, "SIGKILL").exception(
            timeout=WITHIN).__class__ is WorkerCrashedError


@pytest.mark.timeout(120)
def test_a_task_over_its_timeout_fails_and_the_pool_goes_on() -> None:
    config = Config(on_create=tasks.make_plain, worker_count=1, resource_pool_size=0)
    with TaskManager(config, backend=DaskBackend()) as manager:
        started = monotonic()
        slow = manager.submit(tasks.sleep_for, (60,), timeout=0.5)
        with pytest.raises(TaskTimeoutError):
            slow.result(timeout=WITHIN)
        assert monotonic() - started < 10
        assert manager.queue_task(tasks.double, 5).result(timeout=WITHIN) == 10


@pytest.mark.timeout(120)
def test_kill_ends_every_worker_at_once() -> None:
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=0)
    manager = TaskManager(config, backend=DaskBackend())
    running = [manager.queue_task(tasks.sleep_for, 60) for _ in range(2)]
    wait_until(lambda: manager.stats().busy_workers == 2)
    started = monotonic()
    manager.kill()
    assert monotonic() - started < 15 and manager.stopped
    for future in running:
        with pytest.raises(ShutdownError):
            future.result(timeout=WITHIN)


@pytest.mark.timeout(180)
def test_bursting_scales_a_given_cluster_up_and_down_and_destroys_every_resource(
    tmp_path: Path,
) -> None:
    cluster = distributed.LocalCluster(
        n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None,
        worker_dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"})
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        def dask_workers() -> int:  # (scheduler_info() may answer from a stale copy)
            return len(client.sync(client.scheduler.identity, n_workers=-1)["workers"])

        config = marker_config(tmp_path, worker_count=1, max_worker_count=3,
                               burst_interval=0.1, burst_cooldown=0.5)
        peak = 0
        with TaskManager(config, backend=DaskBackend(cluster=cluster)) as manager:
            assert dask_workers() == 1
            futures = [manager.queue_task(burst_tasks.nap, 0.2, i) for i in range(60)]

            def grown() -> bool:
                nonlocal peak
                peak = max(peak, dask_workers())
                return manager.stats().burst_workers >= 1 and peak >= 2
            wait_until(grown, timeout=60)
            assert sorted(f.result(timeout=60) for f in futures) == list(range(60))
            # Idle again: the burst workers leave, and so do their Dask workers.
            wait_until(lambda: manager.stats().burst_workers == 0 and dask_workers() == 1,
                       timeout=60)
            created, destroyed = created_and_destroyed(tmp_path)
            assert len(created) == len(destroyed) + 1  # the base worker lives on
        wait_until(lambda: dask_workers() == 0, timeout=30)  # stop() scales it to nothing
    created, destroyed = created_and_destroyed(tmp_path)
    assert len(created) >= 2 and created == destroyed


@pytest.mark.timeout(120)
def test_the_worker_list_comes_from_the_scheduler_not_the_clients_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client's own periodic refresh rewrites its copy listing no worker (newer Dask);
    # a read of that copy once told the backend every worker had left the cluster.
    from procpool.backends.dask_cluster import SchedulerWatch, read_workers

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        worker_dashboard_address=None)
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=WITHIN)
        stale = {"workers": {}}
        monkeypatch.setattr(client, "scheduler_info", lambda *a, **k: stale)
        watch = SchedulerWatch(client, lambda item: None, interval=1.0)
        assert sorted(read_workers(watch._read())) == sorted(cluster.scheduler.workers)


@pytest.mark.timeout(120)
def test_on_create_failing_on_dask_fails_the_constructor_and_leaves_no_process() -> None:
    config = Config(on_create=tasks.failing_create, worker_count=2, resource_pool_size=0)
    with pytest.raises(Exception, match="licence server unreachable"):
        TaskManager(config, backend=DaskBackend())
    assert threading.active_count() < 50  # nothing left spinning


@pytest.mark.timeout(120)
def test_workers_on_another_machine_are_reported_and_ended_through_dask() -> None:
    """As if the Dask workers ran elsewhere: no pid to signal or read with psutil here."""
    backend = DaskBackend()
    backend._machine = "another machine"  # every Dask worker now looks remote
    config = Config(on_create=tasks.make_plain, worker_count=1, resource_pool_size=0)
    with TaskManager(config, backend=backend) as manager:
        assert manager.queue_task(tasks.double, 2).result(timeout=WITHIN) == 4
        (entry,) = [p for p in manager.dump_stats()["processes"] if p["worker_id"] is not None]
        assert entry["host"] == "127.0.0.1" and entry["rss_bytes"] > 0  # the scheduler's figures
        assert entry["num_threads"] is None  # nothing read with psutil
        # A timeout ends the worker from its own event loop (Client.run), not by signal.
        with pytest.raises(TaskTimeoutError):
            manager.submit(tasks.sleep_for, (60,), timeout=0.3).result(timeout=WITHIN)
        assert manager.queue_task(tasks.double, 3).result(timeout=WITHIN) == 6

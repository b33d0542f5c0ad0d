"""What every backend must do (procpool.backends.Backend's contract), backend by backend.

Each test drives a backend directly, as the supervisor does, except the last
one, which runs a workload through ``TaskManager(config, backend=...)``. A
new backend joins by adding one entry to ``BACKENDS``.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic
from typing import Any
from unittest import mock

import pytest

from procpool import Config, TaskManager, TaskPicklingError
from procpool.backends import (
    Backend,
    Event,
    LocalBackend,
    TaskSpec,
    WorkerCreateFailed,
    WorkerGone,
    WorkerReady,
    WorkerResults,
    WorkerStarted,
    wire,
)
from tests import tasks
from tests.gate import Gate


def dask_local() -> Backend:
    """The Dask backend on a LocalCluster of its own (skipped without the dask extra)."""
    pytest.importorskip("distributed")
    from procpool.backends.dask import DaskBackend

    return DaskBackend()


#: name -> a new, unopened backend
class SingleThreadedCallerBackend(LocalBackend):
    """As a single-threaded caller's backend: open() forks the first workers from this
    process (and then, with forkserver, the server). The test process has idle threads
    of its own, so it would start them the other way."""

    def open(self, config: Config[Any]) -> None:
        with mock.patch("procpool.backends.local.single_threaded", return_value=True):
            super().open(config)
        assert len(self._forked_early) == config.worker_count + config.resource_pool_size
        assert (self._server is not None) == (self._start_method == "forkserver")


BACKENDS: dict[str, Callable[[], Backend]] = {
    "local-fork": lambda: LocalBackend("fork"),
    "local-forkserver": lambda: LocalBackend("forkserver"),
    "local-fork-forked": lambda: SingleThreadedCallerBackend("fork"),
    "local-forkserver-forked": lambda: SingleThreadedCallerBackend("forkserver"),
    "local-spawn": lambda: LocalBackend("spawn"),
    "dask-local": dask_local,
}

WITHIN = 30.0


@pytest.fixture(params=sorted(BACKENDS))
def new_backend(request: pytest.FixtureRequest) -> Callable[[], Backend]:
    factory: Callable[[], Backend] = BACKENDS[request.param]
    return factory


@pytest.fixture
def opened(new_backend: Callable[[], Backend], tmp_path: Path) -> Iterator[Backend]:
    backend = new_backend()
    backend.open(Config(on_create=tasks.make_marker(str(tmp_path)),
                        on_destroy=tasks.destroy_marker, worker_count=1))
    yield backend
    backend.close()


def collect(backend: Backend, until: Callable[[list[Event]], bool]) -> list[Event]:
    """Events from ``wait`` until ``until(events)`` holds (within WITHIN seconds)."""
    events: list[Event] = []
    deadline = monotonic() + WITHIN
    while not until(events):
        assert monotonic() < deadline, f"only got {events}"
        events += backend.wait(0.1)
    return events


def of(kind: type, worker_id: int) -> Callable[[list[Event]], bool]:
    return lambda events: any(isinstance(e, kind) and e.worker_id == worker_id for e in events)


def outcomes(events: list[Event]) -> list[Any]:
    return [o for e in events if isinstance(e, WorkerResults) for o in e.outcomes]


def start(backend: Backend, worker_id: int) -> list[Event]:
    backend.start_worker(worker_id)
    return collect(backend, of(WorkerReady, worker_id))


@pytest.mark.timeout(90)
def test_a_worker_reports_started_then_ready_and_its_pid(opened: Backend) -> None:
    events = start(opened, 1)
    kinds = [type(e) for e in events if e.worker_id == 1]
    assert kinds[-1] is WorkerReady
    if WorkerStarted in kinds:
        assert kinds.index(WorkerStarted) < kinds.index(WorkerReady)
    ready = next(e for e in events if isinstance(e, WorkerReady))
    assert ready.pid == opened.pid(1) and ready.create_seconds >= 0


@pytest.mark.timeout(90)
def test_tasks_run_in_order_with_their_resource_and_report_each_outcome_once(
    opened: Backend,
) -> None:
    start(opened, 1)
    specs = [TaskSpec(i, tasks.record, (f"t{i}",), {}) for i in range(1, 21)]
    assert opened.send(1, specs[:10]) == []
    assert opened.send(1, specs[10:]) == []
    events = collect(opened, lambda ev: len(outcomes(ev)) >= 20)
    reported = outcomes(events)
    assert [o.task_id for o in reported] == list(range(1, 21))
    assert [o.value for o in reported] == list(range(1, 21))  # one resource, in order
    assert all(o.outcome == wire.OK and o.started <= o.finished for o in reported)


@pytest.mark.timeout(90)
def test_a_task_that_cannot_be_serialized_is_rejected_alone(opened: Backend) -> None:
    start(opened, 1)
    specs = [TaskSpec(1, tasks.double, (1,), {}),
             TaskSpec(2, tasks.double, (threading.Lock(),), {}),
             TaskSpec(3, tasks.double, (3,), {})]
    rejected = opened.send(1, specs)
    assert [task_id for task_id, _ in rejected] == [2]
    assert isinstance(rejected[0][1], TaskPicklingError)
    reported = outcomes(collect(opened, lambda ev: len(outcomes(ev)) >= 2))
    assert [(o.task_id, o.value) for o in reported] == [(1, 2), (3, 6)]


@pytest.mark.timeout(90)
def test_a_task_that_raises_reports_its_exception_with_the_remote_traceback(
    opened: Backend,
) -> None:
    start(opened, 1)
    opened.send(1, [TaskSpec(1, tasks.boom, ("bad input",), {})])
    (outcome,) = outcomes(collect(opened, lambda ev: len(outcomes(ev)) >= 1))
    assert outcome.outcome == wire.RAISED
    assert isinstance(outcome.value, tasks.BoomError)
    assert "bad input" in str(outcome.value.__cause__)


@pytest.mark.timeout(90)
def test_running_task_names_the_task_being_run(opened: Backend, tmp_path: Path) -> None:
    start(opened, 1)
    gate = Gate(tmp_path, "gate-running")
    opened.send(1, [TaskSpec(7, tasks.wait_gate, (gate.path,), {})])
    gate.entered()
    running = opened.running_task(1)
    assert running is not None and running[0] == 7 and running[1] <= monotonic()
    gate.open()
    collect(opened, lambda ev: len(outcomes(ev)) >= 1)


@pytest.mark.timeout(90)
def test_retire_runs_on_destroy_and_ends_in_gone(opened: Backend, tmp_path: Path) -> None:
    events = start(opened, 1)
    pid = next(e for e in events if isinstance(e, WorkerReady)).pid
    opened.retire(1)
    gone = next(e for e in collect(opened, of(WorkerGone, 1)) if isinstance(e, WorkerGone))
    assert gone.exitcode == 0 and gone.destroy_error is None
    assert (tmp_path / f"destroy-{pid}").exists()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("grace", [0.0, 0.2])
def test_terminate_ends_a_busy_worker_in_gone(opened: Backend, grace: float) -> None:
    start(opened, 1)
    opened.send(1, [TaskSpec(1, tasks.sleep_for, (60,), {})])
    opened.terminate(1, grace)
    gone = [e for e in collect(opened, of(WorkerGone, 1)) if isinstance(e, WorkerGone)]
    assert len(gone) == 1 and gone[0].exitcode != 0


@pytest.mark.timeout(90)
def test_terminate_ends_a_worker_still_starting(opened: Backend) -> None:
    opened.start_worker(1)
    opened.terminate(1, 0)
    events = collect(opened, of(WorkerGone, 1))
    assert [type(e) for e in events if e.worker_id == 1][-1] is WorkerGone


@pytest.mark.timeout(90)
def test_a_failing_on_create_reports_create_failed_then_gone(
    new_backend: Callable[[], Backend],
) -> None:
    backend = new_backend()
    backend.open(Config(on_create=tasks.failing_create, worker_count=1))
    try:
        backend.start_worker(1)
        events = collect(backend, of(WorkerGone, 1))
        failed = [e for e in events if isinstance(e, WorkerCreateFailed)]
        assert len(failed) == 1 and "licence server unreachable" in failed[0].message
        assert not any(isinstance(e, WorkerReady) for e in events)
    finally:
        backend.close()


@pytest.mark.timeout(90)
def test_wake_from_another_thread_ends_a_wait_without_timeout(opened: Backend) -> None:
    start(opened, 1)
    threading.Timer(0.05, opened.wake).start()
    assert opened.wait(None) == []


@pytest.mark.timeout(90)
def test_close_leaves_no_process_behind(new_backend: Callable[[], Backend]) -> None:
    backend = new_backend()
    backend.open(Config(on_create=tasks.make_plain, worker_count=2))
    for worker_id in (1, 2, 3):
        backend.start_worker(worker_id)
    collect(backend, lambda ev: sum(isinstance(e, WorkerReady) for e in ev) >= 2)
    backend.close()  # the autouse fixture fails the test if a child outlives it


@pytest.mark.timeout(120)
def test_a_task_manager_runs_a_workload_on_the_backend(
    new_backend: Callable[[], Backend],
) -> None:
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=1)
    with TaskManager(config, backend=new_backend()) as manager:
        normal = [manager.queue_task(tasks.double, i) for i in range(50)]
        urgent = manager.queue_task_with_priority(tasks.add, 1, b=2)
        assert list(manager.map(tasks.double, range(100), chunksize=7)) == [
            2 * i for i in range(100)]
        assert manager.run_task(tasks.double, 21) == 42
        assert urgent.result(timeout=WITHIN) == 3
        assert [f.result(timeout=WITHIN) for f in normal] == [2 * i for i in range(50)]
        with pytest.raises(tasks.BoomError):
            manager.queue_task(tasks.boom).result(timeout=WITHIN)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_on_create_may_take_objects_that_travel_only_at_process_start(method: str) -> None:
    """A multiprocessing Queue among on_create's arguments (a logging queue, say)."""
    queue = multiprocessing.get_context(method).Queue()
    config = Config(on_create=functools.partial(tasks.put_pid, queue), worker_count=2,
                    resource_pool_size=0, start_method=method)
    with TaskManager(config) as manager:
        announced = {queue.get(timeout=WITHIN), queue.get(timeout=WITHIN)}
        assert announced == set(manager.worker_pids())
    queue.close()
    queue.join_thread()


def test_a_backend_that_is_not_one_is_refused() -> None:
    with pytest.raises(TypeError, match=r"procpool\.backends\.Backend"):
        TaskManager(Config(on_create=tasks.make_plain), backend=object())  # type: ignore[arg-type]

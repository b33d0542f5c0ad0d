"""procpool's own fork server (backends/forkserver.py), the ``forkserver`` start method.

Structure, not speed: workers are children of the pool's server, which
imported the user's module once (but for the first workers of a caller that
runs a single thread: it forks those itself); workers and the server come and
go with the pool; the pool outlives its server. Timing lives in
scripts/bench_startup.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic
from typing import Any

import psutil
import pytest

from procpool import Config, TaskManager, WorkerCrashedError
from procpool.backends import local
from procpool.backends.base import Event, WorkerCreateFailed, WorkerGone, WorkerReady
from procpool.backends.local import LocalBackend
from tests import fork_server_tasks as fst
from tests import tasks
from tests.gate import Gate
from tests.polling import wait_until
from tests.processes import exited

ROOT = Path(__file__).parent.parent
SERVER_ROLE = "fork-server"



def server_pid(manager: TaskManager[Any]) -> int | None:
    servers = [p["pid"] for p in manager.dump_stats()["processes"] if p["role"] == SERVER_ROLE]
    assert len(servers) <= 1
    return servers[0] if servers else None


def parent_of(pid: int) -> int:
    return psutil.Process(pid).ppid()


def config(**overrides: Any) -> Config[Any]:
    options: dict[str, Any] = {
        "on_create": fst.make_resource,
        "worker_count": 2,
        "resource_pool_size": 0,
        "start_method": "forkserver",
    }
    options.update(overrides)
    return Config(**options)


def base_ready(manager: TaskManager[Any], count: int) -> Callable[[], bool]:
    def check() -> bool:
        stats = manager.stats()
        return (stats.active_workers, stats.starting_workers) == (count, 0)

    return check


# == structure =================================================================


def test_workers_are_children_of_the_pools_own_single_threaded_server() -> None:
    with TaskManager(config(worker_count=3)) as manager:
        server = server_pid(manager)
        assert server is not None and server != os.getpid()
        assert psutil.Process(server).num_threads() == 1  # fork() from it is safe
        pids = manager.worker_pids()
        assert len(pids) == 3
        assert {parent_of(pid) for pid in pids} == {server}


def test_the_default_start_method_uses_the_server() -> None:
    with TaskManager(config(start_method=None)) as manager:
        server = server_pid(manager)
        assert server is not None
        assert {parent_of(pid) for pid in manager.worker_pids()} == {server}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_fork_and_spawn_have_no_server(start_method: str) -> None:
    with TaskManager(config(start_method=start_method)) as manager:
        assert server_pid(manager) is None
        assert {parent_of(pid) for pid in manager.worker_pids()} == {os.getpid()}


def test_the_server_imported_the_on_create_module_once_for_every_worker() -> None:
    # Recycling after every task: each origin() runs in a freshly forked worker.
    with TaskManager(config(max_tasks_per_worker=1)) as manager:
        server = server_pid(manager)
        seen = [manager.queue_task(fst.origin).result(timeout=30) for _ in range(4)]
        assert len({worker for _, worker, _ in seen}) == 4
        for imported_in, worker, parent in seen:
            assert (imported_in, parent) == (server, server)
            assert worker != server
        assert server_pid(manager) == server  # one server for the pool's whole life


_MAIN_SCRIPT = """
import io, sys, threading
sys.path.insert(0, {root!r})
# Block-buffered, in every process that runs this module: the text printed below sits in
# the fork server's buffer, and a worker forked with it would write it again.
sys.stdout = io.TextIOWrapper(open(sys.stdout.fileno(), "wb", closefd=False))
print("main module ran")
from procpool import Config, TaskManager
from tests import tasks

if __name__ == "__main__":
    if {threaded!r}:  # another thread: the server cannot be forked from here safely
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    config = Config(on_create=tasks.make_plain, worker_count=3, resource_pool_size=0,
                    max_tasks_per_worker=1)
    with TaskManager(config) as manager:
        assert list(manager.map(tasks.double, range(6))) == [0, 2, 4, 6, 8, 10]
    print("done")
"""


@pytest.mark.parametrize("threaded", [False, True], ids=["single-threaded", "threaded"])
def test_the_main_module_runs_at_most_once_more_and_its_output_is_not_repeated(
    tmp_path: Path, threaded: bool
) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_MAIN_SCRIPT).format(root=str(ROOT), threaded=threaded))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=str(ROOT), check=False)
    assert done.returncode == 0, done.stderr
    # Once in this process. A single-threaded caller forks the fork server, which so has
    # the main module already; from a threaded one it starts through multiprocessing's
    # forkserver and runs it once more. Never in the (9 or more) workers.
    assert done.stdout.count("main module ran") == (2 if threaded else 1), done.stdout
    assert done.stdout.count("done") == 1


_FIRST_WORKERS_SCRIPT = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
import psutil
from procpool import Config, TaskManager
from tests import fork_server_tasks as fst
from tests.polling import wait_until

threads_at_fork = []
real_fork = os.fork


def counting_fork():
    threads_at_fork.append(len(os.listdir("/proc/self/task")))
    return real_fork()


if __name__ == "__main__":
    os.fork = counting_fork  # this process's forks only: the server forks with its own
    config = Config(on_create=fst.make_resource, worker_count=2, resource_pool_size=1,
                    start_method={start_method!r})
    with TaskManager(config) as manager:
        forks = list(threads_at_fork)
        first = manager.worker_pids()
        first_parents = [psutil.Process(pid).ppid() for pid in first]
        servers = [p["pid"] for p in manager.dump_stats()["processes"]
                   if p["role"] == "fork-server"]
        os.kill(first[0], signal.SIGKILL)  # its replacement starts in a running pool
        wait_until(lambda: bool(set(manager.worker_pids()) - set(first)), timeout=30)
        later = set(manager.worker_pids()) - set(first)
        print(json.dumps({{"forks": forks, "me": os.getpid(), "servers": servers,
                          "first_parents": first_parents,
                          "later_parents": [psutil.Process(pid).ppid() for pid in later]}}))
"""


@pytest.mark.parametrize("start_method", ["forkserver", "fork"])
def test_a_single_threaded_caller_forks_the_first_workers_before_any_thread_starts(
    tmp_path: Path, start_method: str
) -> None:
    # Forked from the caller's only thread, no lock can be copied held (and Python 3.12+
    # has no reason to warn). Later workers come from the server, or with fork from
    # the supervisor thread, as before.
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_FIRST_WORKERS_SCRIPT).format(
        root=str(ROOT), start_method=start_method))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=str(ROOT), check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    expected_forks = 4 if start_method == "forkserver" else 3  # 3 workers (+ the server)
    assert seen["forks"] == [1] * expected_forks
    assert seen["first_parents"] == [seen["me"]] * 3
    if start_method == "forkserver":
        [server] = seen["servers"]
        assert seen["later_parents"] == [server]
    else:
        assert seen["servers"] == [] and seen["later_parents"] == [seen["me"]]


_COLD_AND_WARM_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
import psutil
from procpool import Config, TaskManager
from tests import fork_server_tasks as fst
from tests import tasks
from tests.polling import wait_until

threads_at_fork = []
real_fork = os.fork


def counting_fork():
    threads_at_fork.append(len(os.listdir("/proc/self/task")))
    return real_fork()


if __name__ == "__main__":
    os.fork = counting_fork
    seen = []
    for _ in ("cold", "warm"):  # a second pool in the same process, once the first is gone
        # (its threads are joined, but the OS may list one a moment longer: a pool built
        # then takes the threaded path, correct but slower)
        wait_until(lambda: len(os.listdir("/proc/self/task")) == 1, timeout=30)
        del threads_at_fork[:]
        config = Config(on_create=fst.make_resource, worker_count={workers},
                        resource_pool_size=0, start_method={start_method!r})
        with TaskManager(config) as manager:
            forks = list(threads_at_fork)
            parents = [psutil.Process(pid).ppid() for pid in manager.worker_pids()]
            # Every worker busy, then normal tasks queued before one priority task.
            blockers = [manager.queue_task(tasks.sleep_for, 0.3) for _ in range({workers})]
            normal = [manager.queue_task(fst.started_at, f"n{{i}}") for i in range(4)]
            first = manager.queue_task_with_priority(fst.started_at, "p")
            starts = dict(f.result(timeout=30) for f in [*normal, first])
            assert [b.result(timeout=30) for b in blockers] == [0.3] * {workers}
        ahead = sum(1 for label, at in starts.items() if label != "p" and at < starts["p"])
        seen.append({{"forks": forks, "parents": parents, "me": os.getpid(), "ahead": ahead}})
    print(json.dumps(seen))
"""


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("start_method", ["forkserver", "fork"])
def test_cold_and_warm_pools_of_a_single_threaded_caller_fork_their_own_first_workers(
    tmp_path: Path, start_method: str, workers: int
) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(_COLD_AND_WARM_SCRIPT).format(
        root=str(ROOT), start_method=start_method, workers=workers))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=str(ROOT), check=False)
    assert done.returncode == 0, done.stderr
    expected_forks = workers + (1 if start_method == "forkserver" else 0)
    for pool in json.loads(done.stdout):
        assert pool["forks"] == [1] * expected_forks, pool  # before any thread of the pool's
        assert pool["parents"] == [pool["me"]] * workers
        # Strict priority on these workers too: the priority task goes to the first worker
        # that frees up; only the other workers' first normal tasks may start before it.
        assert pool["ahead"] <= workers - 1, pool


# == failures ==================================================================


def test_a_worker_killed_with_sigkill_fails_its_task_and_the_server_forks_a_new_one(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path)
    with TaskManager(config(worker_count=1)) as manager:
        server = server_pid(manager)
        [pid] = manager.worker_pids()
        running = manager.queue_task(tasks.wait_gate, gate.path)
        queued = [manager.queue_task(tasks.double, i) for i in range(3)]
        gate.entered()
        os.kill(pid, signal.SIGKILL)
        error = running.exception(timeout=10)
        assert isinstance(error, WorkerCrashedError)
        assert (error.pid, error.exitcode, error.signal_name) == (pid, -signal.SIGKILL, "SIGKILL")
        assert [f.result(timeout=30) for f in queued] == [0, 2, 4]
        wait_until(base_ready(manager, 1))
        [new] = manager.worker_pids()
        assert new != pid and parent_of(new) == server


def test_the_pool_outlives_its_server_killed_mid_run(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    with TaskManager(config()) as manager:
        server = server_pid(manager)
        assert server is not None
        first = manager.worker_pids()
        running = manager.queue_task(tasks.wait_gate, gate.path)
        gate.entered()
        os.kill(server, signal.SIGKILL)
        wait_until(lambda: server_pid(manager) is None)  # the pool noticed
        # Its workers live on: the running task finishes, others run.
        gate.open()
        assert running.result(timeout=30) in first
        assert list(manager.map(tasks.double, range(20))) == [i * 2 for i in range(20)]
        assert sorted(manager.worker_pids()) == sorted(first)
        # A worker of the dead server dying is still seen (its pipe closes), and the
        # replacement comes from a new server.
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: first[0] not in manager.worker_pids())
        wait_until(base_ready(manager, 2))
        replacement = next(pid for pid in manager.worker_pids() if pid not in first)
        new_server = server_pid(manager)
        assert new_server not in (None, server)
        assert parent_of(replacement) == new_server
        assert list(manager.map(tasks.double, range(20))) == [i * 2 for i in range(20)]
        assert manager.metrics().total_tasks_failed == 0
    # The orphaned worker of the old server is not our descendant any more (the
    # leak check cannot see it): it must be gone too.
    wait_until(lambda: all(exited(pid) for pid in first), timeout=5)
    assert new_server is not None and not psutil.pid_exists(new_server)


def test_closing_the_pool_leaves_neither_workers_nor_server() -> None:
    with TaskManager(config(worker_count=3)) as manager:
        server = server_pid(manager)
        pids = manager.worker_pids()
    assert server is not None
    for pid in [server, *pids]:
        assert not psutil.pid_exists(pid) or exited(pid)


# == the backend, directly =====================================================


def new_backend() -> LocalBackend:
    backend = LocalBackend("forkserver")
    backend.open(Config(on_create=tasks.make_plain))
    return backend


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    made = new_backend()
    yield made
    made.close()


def collect(backend: LocalBackend, until: Callable[[list[Event]], bool]) -> list[Event]:
    events: list[Event] = []
    deadline = monotonic() + 20
    while not until(events):
        assert monotonic() < deadline, f"only got {events}"
        events += backend.wait(0.1)
    return events


def ready(count: int) -> Callable[[list[Event]], bool]:
    return lambda events: sum(isinstance(e, WorkerReady) for e in events) >= count


def test_close_kills_workers_whose_start_was_never_answered() -> None:
    backend = new_backend()
    try:
        backend.start_worker(1)
        collect(backend, ready(1))
        [server] = backend.helper_processes().values()
        backend.start_worker(2)
        backend.start_worker(3)  # close() comes before the server's answers are read
        children = psutil.Process(server).children
        wait_until(lambda: len(children()) == 3)
        pids = [p.pid for p in children()]
        assert set(backend.processes()) == {1}
    finally:
        backend.close()
    assert not psutil.pid_exists(server)
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_terminate_reports_the_exit_status_from_the_server(backend: LocalBackend) -> None:
    backend.start_worker(1)
    [ready_event] = [e for e in collect(backend, ready(1)) if isinstance(e, WorkerReady)]
    assert backend.processes() == {1: ready_event.pid}
    backend.terminate(1)
    events = collect(backend, lambda ev: any(isinstance(e, WorkerGone) for e in ev))
    assert events[-1] == WorkerGone(1, -signal.SIGTERM, None, None)
    assert backend.processes() == {}


def test_a_dead_server_is_replaced_on_the_next_start(backend: LocalBackend) -> None:
    backend.start_worker(1)
    collect(backend, ready(1))
    [server] = backend.helper_processes().values()
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: exited(server))
    backend.start_worker(2)  # may find out only now, on sending
    collect(backend, ready(1))
    [new_server] = backend.helper_processes().values()
    assert new_server != server
    assert parent_of(backend.processes()[2]) == new_server
    assert parent_of(backend.processes()[1]) != server  # orphaned, still running


def test_a_server_that_cannot_start_fails_the_start_clearly(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(spec: object) -> None:
        raise OSError("no more processes")

    monkeypatch.setattr(local, "ForkServerClient", broken)
    backend.start_worker(1)
    events = backend.wait(None)  # returns at once: the failure is already known
    assert events == [
        WorkerCreateFailed(
            1, "could not start the worker process: the fork server could not start: "
            "OSError: no more processes", ""),
        WorkerGone(1, None, None, None),
    ]
    assert backend.processes() == {} and backend.helper_processes() == {}

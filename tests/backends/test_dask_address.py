"""``DaskBackend(address=...)``: a scheduler and two workers started as separate processes
(``dask scheduler``, ``dask worker``), as they would run on other machines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from time import monotonic, sleep

import pytest

from procpool import Config, TaskManager, WorkerCrashedError
from tests import dask_tasks, tasks
from tests.gate import Gate
from tests.processes import exited

pytest.importorskip("distributed")

from procpool.backends.dask import DaskBackend

ROOT = Path(__file__).parent.parent.parent
WITHIN = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def scheduler_address(tmp_path: Path) -> Iterator[str]:
    """A scheduler and two one-thread workers, each command in a session of its own (its
    nanny and worker process with it), all killed at the end."""
    dask = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the workers import tests.tasks
    commands = [[dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                 "--no-dashboard"]]
    commands += [[dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                  "--no-dashboard", "--host", "127.0.0.1"]] * 2
    started = []
    try:
        for i, command in enumerate(commands):
            with open(tmp_path / f"dask-{i}.log", "w") as log:
                started.append(subprocess.Popen(command, env=env, cwd=str(tmp_path),
                                                stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
        yield address
    finally:
        for process in reversed(started):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=WITHIN)


@pytest.mark.timeout(180)
def test_the_same_workload_through_a_scheduler_address(
    scheduler_address: str, tmp_path: Path,
) -> None:
    config = Config(on_create=tasks.make_marker(str(tmp_path)), on_destroy=tasks.destroy_marker,
                    worker_count=2, resource_pool_size=0, max_retries=1)
    backend = DaskBackend(address=scheduler_address, workers_timeout=WITHIN)
    with TaskManager(config, backend=backend) as manager:
        pids = manager.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
        assert "dask-scheduler" in {p["role"] for p in manager.dump_stats()["processes"]}
        normal = [manager.queue_task(tasks.double, i) for i in range(50)]
        urgent = manager.queue_task_with_priority(tasks.add, 1, b=2)
        assert list(manager.map(tasks.double, range(100), chunksize=7)) == [
            2 * i for i in range(100)]
        assert urgent.result(timeout=WITHIN) == 3
        assert [f.result(timeout=WITHIN) for f in normal] == [2 * i for i in range(50)]
        with pytest.raises(tasks.BoomError):
            manager.queue_task(tasks.boom).result(timeout=WITHIN)
        # One Dask worker dies under a task: that task fails (a *_once task is never
        # retried); the worker's nanny restarts it, and the pool uses it again.
        gate = Gate(tmp_path, "gate-address")
        doomed = manager.queue_task_once(dask_tasks.wait_gate_noting_pid, gate.path)
        gate.entered()
        victim = int(Path(gate.path + ".pid").read_text())
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            doomed.result(timeout=WITHIN)
        assert list(manager.map(tasks.double, range(20))) == [2 * i for i in range(20)]
        deadline = monotonic() + WITHIN  # the nanny restarts its worker in a moment
        while len(manager.worker_pids()) < 2:
            assert monotonic() < deadline, "the restarted Dask worker was never used"
            sleep(0.05)
        assert victim not in manager.worker_pids()
        assert list(manager.map(tasks.double, range(20))) == [2 * i for i in range(20)]
    assert exited(victim)
    destroyed = {p.name.split("-")[1] for p in tmp_path.iterdir() if p.name.startswith("destroy-")}
    created = {p.name.split("-")[1] for p in tmp_path.iterdir() if p.name.startswith("create-")}
    assert created - destroyed == {str(victim)}  # every resource destroyed but the killed one

"""TaskManager.dump_stats(): every process of the pool, read with psutil; the stats file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from procpool import Config, TaskManager
from procpool.procstats import write_json_atomic
from tests import tasks

_MP_SERVERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
_STATES = {"starting", "idle", "busy", "leaving"}
_ROLES = {"base", "burst", "reserved", "temporary"}


def pool_pids() -> set[int]:
    """Our pool's processes (workers and procpool's fork server), as the OS sees them.

    With ``forkserver`` the workers are children of procpool's fork server,
    itself a child of multiprocessing's forkserver (a process this one
    started), so look at every descendant and leave out multiprocessing's own
    servers: our direct children running one of them.
    """
    me = os.getpid()
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            server = child.ppid() == me and any(s in " ".join(child.cmdline()) for s in _MP_SERVERS)
        except psutil.NoSuchProcess:
            continue
        if not server:
            found.add(child.pid)
    return found


def spin(resource: Any, cpu_seconds: float) -> int:
    """Use ``cpu_seconds`` of CPU time in the worker; return its pid."""
    deadline = time.thread_time() + cpu_seconds
    while time.thread_time() < deadline:
        sum(range(1000))
    return os.getpid()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_dump_stats_lists_every_live_process_with_sane_figures(start_method: str) -> None:
    config = Config(on_create=tasks.make_plain, worker_count=3, resource_pool_size=1,
                    start_method=start_method)
    with TaskManager(config) as manager:
        done = list(manager.map(tasks.double, range(20), chunksize=1))
        assert len(done) == 20
        dump = manager.dump_stats()
        json.dumps(dump, allow_nan=False)  # JSON-ready, strict JSON
        assert dump["stats"] == {
            "base_workers": 3, "burst_workers": 0, "active_workers": 3, "busy_workers": 0,
            "queued_tasks": 0, "priority_tasks": 0, "available_resources": 1,
            "starting_workers": 0,
        }
        assert dump["metrics"]["total_tasks_completed"] == 20
        assert dump["time"] == pytest.approx(time.time(), abs=60)

        supervisor, *others = dump["processes"]
        helpers = [p for p in others if p["role"] == "fork-server"]
        workers = [p for p in others if p["role"] != "fork-server"]
        assert others[: len(helpers)] == helpers  # the helpers come first
        assert supervisor["pid"] == os.getpid()
        assert supervisor["role"] == "supervisor"
        assert supervisor["state"] == "running"
        assert supervisor["num_threads"] >= 2  # this thread and the supervisor's
        assert supervisor["tasks_done"] == 20

        assert {p["pid"] for p in others} == pool_pids()
        if start_method == "forkserver":
            [server] = helpers
            assert server["state"] == "running" and server["worker_id"] is None
            assert server["tasks_done"] == 0 and server["num_threads"] == 1
            assert 1 << 20 < server["rss_bytes"] < 1 << 32
            assert 0 <= server["uptime_seconds"] < 60
            assert {psutil.Process(w["pid"]).ppid() for w in workers} == {server["pid"]}
        else:
            assert helpers == []
        assert sorted(w["role"] for w in workers) == ["base", "base", "base", "reserved"]
        for w in workers:
            assert w["state"] == "idle"
            assert isinstance(w["worker_id"], int)
            assert w["cpu_percent"] == 0.0  # first reading: no interval to measure yet
            assert 1 << 20 < w["rss_bytes"] < 1 << 32
            assert w["num_threads"] >= 2  # the task loop and the lifeline to the supervisor
            assert 0 <= w["uptime_seconds"] < 60
        assert sum(w["tasks_done"] for w in workers) == 20
        assert [w["worker_id"] for w in workers] == sorted(w["worker_id"] for w in workers)


def test_cpu_percent_covers_the_time_since_the_previous_call() -> None:
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=0)
    with TaskManager(config) as manager:
        manager.dump_stats()  # starts the measurement of every process
        pid = manager.queue_task(spin, 0.3).result()
        by_pid = {p["pid"]: p for p in manager.dump_stats()["processes"]}
        # 0.3 s of CPU inside an interval of at most a few seconds, even on a busy machine.
        assert by_pid[pid]["cpu_percent"] > 5
        assert by_pid[pid]["tasks_done"] == 1


def test_a_replaced_worker_is_forgotten_and_the_new_one_listed() -> None:
    config = Config(on_create=tasks.make_plain, worker_count=1, resource_pool_size=0,
                    max_tasks_per_worker=1)
    with TaskManager(config) as manager:
        pids = [manager.queue_task(tasks.pid_of).result() for _ in range(3)]
        assert len(set(pids)) == 3  # recycled after every task
        for _ in range(3):
            listed = [p["pid"] for p in manager.dump_stats()["processes"][1:]
                      if p["role"] != "fork-server"]
            assert not set(listed) & set(pids[:2])
            # What the dumper caches is what it listed: nothing of workers gone.
            cached = {pid for _, pid in manager._dumper._workers}  # type: ignore[union-attr]
            assert cached <= set(listed)


def test_config_stats_dump_path_writes_the_file_from_the_supervisor(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    config = Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=0,
                    stats_dump_path=path, stats_dump_interval=0.05)
    with TaskManager(config) as manager:
        assert manager.queue_task(tasks.double, 4).result() == 8
        deadline = time.monotonic() + 10
        dump = None
        while time.monotonic() < deadline:  # the supervisor writes it every 50 ms
            if path.exists():
                dump = json.loads(path.read_text())
                if dump["metrics"]["total_tasks_completed"] == 1:
                    break
            time.sleep(0.01)
        assert dump is not None, "no stats file within 10 s"
        assert dump["metrics"]["total_tasks_completed"] == 1
        assert {p["pid"] for p in dump["processes"][1:]} == pool_pids()
        assert dump["processes"][0]["pid"] == os.getpid()
    # After the stop, the last dump shows the pool without workers; no temporary file is left.
    final = json.loads(path.read_text())
    assert [p["role"] for p in final["processes"]] == ["supervisor"]
    assert final["processes"][0]["state"] == "stopping"
    assert [p.name for p in tmp_path.iterdir()] == ["pool.json"]


def test_write_json_atomic_replaces_whole_files_only(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})  # strict JSON refuses NaN
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 2}  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]

"""Every process is accounted for: after GC, interpreter exit, and a killed caller."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from procpool import Config, TaskManager
from procpool.supervisor import _live_supervisors
from tests import tasks


def _worker_pids(manager: TaskManager[object]) -> list[int]:
    return [w.pid for w in manager._supervisor.worker_handles() if w.pid is not None]


def test_a_forgotten_manager_drains_and_exits_when_collected() -> None:
    manager: TaskManager[object] = TaskManager(
        Config(on_create=tasks.make_plain, worker_count=2, resource_pool_size=0)
    )
    future = manager.queue_task(tasks.sleep_for, 0.05)
    pids = _worker_pids(manager)
    supervisor = manager._supervisor
    del manager
    gc.collect()
    assert future.result(timeout=30) == 0.05  # queued work still ran
    assert supervisor.join(timeout=30)
    _, alive = psutil.wait_procs(
        [psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10
    )
    assert alive == []
    assert supervisor not in _live_supervisors


def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).parent.parent),
    )


def test_interpreter_exit_stops_an_unstopped_manager(tmp_path: Path) -> None:
    done = _run_script(
        tmp_path,
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from procpool import Config, TaskManager
        from tests import tasks

        if __name__ == "__main__":
            manager = TaskManager(Config(on_create=tasks.make_marker({str(tmp_path)!r}),
                                         on_destroy=tasks.destroy_marker, worker_count=2))
            future = manager.queue_task(tasks.sleep_for, 0.2)
            pids = [w.pid for w in manager._supervisor.worker_handles()]
            print(json.dumps(pids), flush=True)
            # no stop(): the interpreter exits with a task still running
    """,
    )
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout)
    assert all(
        not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie" for pid in pids
    )
    destroyed = [p for p in tmp_path.iterdir() if p.name.startswith("destroy-")]
    assert len(destroyed) == 3  # graceful: on_destroy ran in every worker

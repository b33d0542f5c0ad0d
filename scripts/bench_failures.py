"""How fast procpool notices a dead worker and a task over its time.

* crash detection latency: from the moment a busy worker is SIGKILLed (as the
  OOM killer would) to the moment its task's future fails with
  WorkerCrashedError;
* timeout overshoot: from the task's deadline (its start in the worker plus
  its timeout) to the moment its future fails with TaskTimeoutError;
* replacement: from the future failing to a new worker being ready again.

Medians (and worst case) over ``--trials`` trials. Usage::

    python scripts/bench_failures.py [--trials 20] [--start-method forkserver]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import procpool

TIMEOUT = 0.2  # seconds given to the task that overruns


def make_resource() -> dict[str, Any]:
    return {}


def sleep_noting_start(resource: Any, path: str, seconds: float) -> None:
    """Write when the task started (monotonic clock, shared by all processes), then sleep."""
    Path(path).write_text(repr(time.monotonic()))
    time.sleep(seconds)


def failed_at(future: Future[Any]) -> list[float]:
    """A one-slot list filled with the monotonic time at which ``future`` resolves."""
    stamp: list[float] = []
    future.add_done_callback(lambda _: stamp.append(time.monotonic()))
    return stamp


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the pool did not get there in time")
        time.sleep(0.0005)


def ready(manager: procpool.TaskManager[Any]) -> bool:
    stats = manager.stats()
    return stats.active_workers == 1 and stats.starting_workers == 0 and stats.busy_workers == 0


def one_crash(manager: procpool.TaskManager[Any], folder: str) -> tuple[float, float]:
    started = Path(folder, "started")
    started.unlink(missing_ok=True)
    [pid] = manager.worker_pids()
    future = manager.queue_task(sleep_noting_start, str(started), 60.0)
    stamp = failed_at(future)
    wait_for(started.exists)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    error = future.exception(timeout=30)
    assert isinstance(error, procpool.WorkerCrashedError), error
    wait_for(lambda: ready(manager) and pid not in manager.worker_pids())
    return stamp[0] - killed, time.monotonic() - stamp[0]


def one_timeout(manager: procpool.TaskManager[Any], folder: str) -> tuple[float, float]:
    started = Path(folder, "started")
    started.unlink(missing_ok=True)
    future = manager.submit(sleep_noting_start, (str(started), 60.0), timeout=TIMEOUT)
    stamp = failed_at(future)
    error = future.exception(timeout=30)
    assert isinstance(error, procpool.TaskTimeoutError), error
    deadline = float(started.read_text()) + TIMEOUT
    wait_for(lambda: ready(manager))
    return stamp[0] - deadline, time.monotonic() - stamp[0]


def report(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    print(f"{name:<34} median {statistics.median(ms):7.2f} ms   max {ms[-1]:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--start-method", default=None)
    args = parser.parse_args()
    config = procpool.Config(on_create=make_resource, worker_count=1, resource_pool_size=0,
                             start_method=args.start_method)
    detect, crash_replace, overshoot, timeout_replace = [], [], [], []
    with tempfile.TemporaryDirectory() as folder, procpool.TaskManager(config) as manager:
        for _ in range(args.trials):
            latency, replace = one_crash(manager, folder)
            detect.append(latency)
            crash_replace.append(replace)
            late, replace = one_timeout(manager, folder)
            overshoot.append(late)
            timeout_replace.append(replace)
    print(f"{args.trials} trials, start method {config.effective_start_method},"
          f" timeout {TIMEOUT} s, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    report("crash detection latency", detect)
    report("timeout overshoot", overshoot)
    report("replacement ready after a crash", crash_replace)
    report("replacement ready after a timeout", timeout_replace)


if __name__ == "__main__":
    main()

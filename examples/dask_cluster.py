"""From one machine to a cluster in one line: the same pool on Dask distributed.

Only the ``backend=`` argument differs from examples/basic.py: each worker is a
Dask worker process (one thread) that builds its resource once and runs many
tasks with it, with procpool's priorities, retries and bursting.

Run: python examples/dask_cluster.py                      (a LocalCluster of this machine)
     python examples/dask_cluster.py tcp://scheduler:8786  (a running cluster whose
     workers have procpool installed and were started with ``--nthreads 1``)
"""

from __future__ import annotations

import os
import re
import socket
import sys

import procpool
from procpool.backends.dask import DaskBackend


def load_rules() -> list[re.Pattern[str]]:
    """Runs once in each Dask worker: compile a (pretend) large rule set."""
    return [re.compile(rf"\b{word}\w*\b", re.IGNORECASE) for word in ("err", "warn", "fail")]


def count_hits(rules: list[re.Pattern[str]], line: str) -> int:
    return sum(len(rule.findall(line)) for rule in rules)


def where(rules: list[re.Pattern[str]], tag: str) -> str:
    return f"{tag} on {socket.gethostname()} pid {os.getpid()}"


if __name__ == "__main__":  # a LocalCluster starts its workers with spawn: the guard matters
    address = sys.argv[1] if len(sys.argv) > 1 else None
    config = procpool.Config(on_create=load_rules, worker_count=2, resource_pool_size=0)
    lines = ["error: disk failing", "all good", "warning: warm", "FAIL fast, fail often"] * 250
    with procpool.TaskManager(config, backend=DaskBackend(address)) as manager:
        print(f"{len(manager.worker_pids())} Dask workers ready")
        hits = sum(manager.map(count_hits, lines, chunksize=50))
        print(f"{len(lines)} lines: {hits} hits")
        normal = [manager.queue_task(where, f"normal-{i}") for i in range(4)]
        urgent = manager.queue_task_with_priority(where, "urgent")
        print(f"ran {urgent.result()}")
        print(f"{len([f.result() for f in normal])} normal tasks done")
        try:
            manager.queue_task(count_hits, None).result()
        except TypeError as exc:
            print(f"a task's own error comes back as itself: {type(exc).__name__}")
    print("stopped: the cluster is closed")

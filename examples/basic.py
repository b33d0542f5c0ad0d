"""The basics: a heavy resource built once per worker, many tasks, a clean stop.

Run: python examples/basic.py
"""

from __future__ import annotations

import os
import re

import procpool


def load_rules() -> list[re.Pattern[str]]:
    """Runs once in each worker process: compile a (pretend) large rule set."""
    print(f"worker {os.getpid()}: compiling rules", flush=True)
    return [re.compile(rf"\b{word}\w*\b", re.IGNORECASE) for word in ("err", "warn", "fail")]


def close_rules(rules: list[re.Pattern[str]]) -> None:
    """Runs in the worker when it leaves gracefully."""
    print(f"worker {os.getpid()}: releasing {len(rules)} rules", flush=True)


def count_hits(rules: list[re.Pattern[str]], line: str) -> int:
    """A task: every task receives the worker's resource first."""
    return sum(len(rule.findall(line)) for rule in rules)


if __name__ == "__main__":
    config = procpool.Config(on_create=load_rules, on_destroy=close_rules, worker_count=2,
                             resource_pool_size=0)
    lines = ["error: disk failing", "all good", "warning: warm", "FAIL fast, fail often"] * 250
    with procpool.TaskManager(config) as manager:
        single = manager.queue_task(count_hits, "one error here").result()
        print(f"one line: {single} hit")
        hits = sum(manager.map(count_hits, lines, chunksize=50))
        print(f"{len(lines)} lines: {hits} hits")
        try:
            manager.queue_task(count_hits, None).result()
        except TypeError as exc:
            print(f"a task's own error comes back as itself: {type(exc).__name__}")
        print(manager.stats())
    print("stopped: every worker ran on_destroy")

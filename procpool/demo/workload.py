"""The simulated work, run inside the worker processes.

:func:`build_table` is the heavy ``on_create``: it fills a lookup table (a few
MiB of pseudo-random bytes, visible in each worker's RSS) and takes about
``create_ms`` in all. :func:`crunch` is a task: it walks the table on the
CPU, not asleep, until its own thread has used ``cpu_seconds`` of CPU time,
so a crowded machine makes tasks take longer, as real work would.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

#: Size of each worker's lookup table. Big enough to show in RSS, quick to build.
TABLE_BYTES = 4 * 1024 * 1024

#: What a task is told to do besides its work.
OK, FAIL, CRASH = "ok", "fail", "crash"

#: Exit code of a worker that a crash task ended (shows in the crash report).
CRASH_EXIT_CODE = 13

#: Table lookups between two reads of the CPU clock.
_STRIDE = 256


class SimulatedFailure(RuntimeError):
    """Raised by a task asked to fail (``--fail-rate``)."""


@dataclass
class Table:
    """A worker's resource: a precomputed table and who built it."""

    values: bytes
    pid: int = field(default_factory=os.getpid)


def build_table(create_ms: float) -> Table:
    """``on_create``: build the table, then wait out the rest of ``create_ms``."""
    started = time.monotonic()
    table = Table(random.Random(os.getpid()).randbytes(TABLE_BYTES))
    remaining = create_ms / 1000 - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)  # stands for loading a model, opening a licence, ...
    return table


def crunch(table: Table, cpu_seconds: float, outcome: str = OK, seed: int = 1) -> int:
    """A task: ``cpu_seconds`` of table lookups; then fail or end the worker if told to."""
    values = table.values
    size = len(values)
    index = seed % size
    total = 0
    spent = cpu_seconds / 2 if outcome == CRASH else cpu_seconds
    deadline = time.thread_time() + spent
    while time.thread_time() < deadline:
        for _ in range(_STRIDE):
            index = (index * 1103515245 + 12345) % size
            total += values[index]
    if outcome == CRASH:
        os._exit(CRASH_EXIT_CODE)  # no cleanup, no goodbye: like a segfault in a C library
    if outcome == FAIL:
        raise SimulatedFailure(f"simulated failure after {cpu_seconds * 1000:.0f} ms of work")
    return total

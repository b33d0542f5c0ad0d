"""The tasks of the peer benchmark, each in two forms: ``fn(*args)`` for the peers and
``fn_r(resource, *args)`` for procpool, plus the physical floor of a round trip.

Every task here is a module-level function of an importable module, so that
every pool pickles it by reference.
"""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import statistics
import struct
import sysconfig
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

# -- tiny, CPU and timed tasks -----------------------------------------------------------


def nothing() -> None:
    """procpool's ``on_create`` when the tasks need no resource."""


def noop(x: int) -> int:
    return x


def noop_r(resource: object, x: int) -> int:
    return x


def spin(n: int) -> int:
    """A pure-Python loop of ``n`` steps (the parent calibrates ``n`` to ~20 ms)."""
    x = 0
    for i in range(n):
        x ^= i
    return x


def spin_r(resource: object, n: int) -> int:
    return spin(n)


def spin_timed(n: int) -> float:
    """:func:`spin`, returning the seconds it ran where it ran (in the worker)."""
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def spin_timed_r(resource: object, n: int) -> float:
    return spin_timed(n)


def bare_parallel_wall(count: int, n: int, processes: int) -> float:
    """Seconds ``count`` spins of ``n`` take split over ``processes`` processes forked from
    here, no pool between: the ideal a pool's wall time is held against. Forked, they
    share this interpreter's memory layout, as a pool's forked workers do; that layout
    alone moves a pure-Python loop's speed by up to ~15% from one interpreter to the next."""
    share = -(-count // processes)
    start = time.perf_counter()
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: spin, then leave without running the parent's cleanup
            code = 1
            try:
                for _ in range(share):
                    spin(n)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    wall = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"a bare spinning process failed: exit codes {codes}")
    return wall


def busy(seconds: float) -> tuple[int, float, float]:
    """Keep the CPU busy ``seconds`` without sleeping; (pid, start, end) on the
    ``perf_counter`` clock (CLOCK_MONOTONIC on Linux, one clock for every process)."""
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        now = time.perf_counter()
    return os.getpid(), start, now


def busy_r(resource: object, seconds: float) -> tuple[int, float, float]:
    return busy(seconds)


def pid_after(seconds: float) -> int:
    """Sleep, then name the worker: two at once show both workers are up."""
    time.sleep(seconds)
    return os.getpid()


def pid_after_r(resource: object, seconds: float) -> int:
    return pid_after(seconds)


def gate(folder: str) -> int:
    """Say this worker is on the gate (a file ``started-PID``), then hold it until a
    file ``open`` appears in ``folder``."""
    Path(folder, f"started-{os.getpid()}").touch()
    opened = Path(folder, "open")
    while not opened.exists():
        time.sleep(0.005)
    return os.getpid()


def gate_r(resource: object, folder: str) -> int:
    return gate(folder)


# -- the real workload: score the nodes of every stdlib module ----------------------------

#: pbkdf2 rounds per node class: the table costs ~50 ms to build (130 classes, Python 3.11).
TABLE_ROUNDS = 1900

#: The table of the worker this module runs in, built by :func:`init_table` (peers).
TABLE: dict[str, int] = {}


def _node_classes() -> list[str]:
    seen: set[str] = set()
    todo: list[type] = [ast.AST]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__name__ not in seen:
                seen.add(sub.__name__)
                todo.append(sub)
    return sorted(seen)


def build_table() -> dict[str, int]:
    """{node class name: weight 1..97}, the same in every process, at a fixed cost."""
    table = {}
    for name in _node_classes():
        digest = hashlib.pbkdf2_hmac("sha256", name.encode(), b"peer-bench", TABLE_ROUNDS)
        table[name] = int.from_bytes(digest[:4], "big") % 97 + 1
    return table


def init_table() -> None:
    """The peers' ``initializer``: the table as a module global of the worker."""
    TABLE.clear()
    TABLE.update(build_table())


def score(table: dict[str, int], path: str) -> int:
    """Sum of the table's weights over every node of one file; 0 if it cannot be read
    or parsed."""
    try:
        source = Path(path).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=path)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return 0
    get = table.get
    return sum(get(type(node).__name__, 0) for node in ast.walk(tree))


def score_file(path: str) -> int:
    return score(TABLE, path)


def score_file_r(table: dict[str, int], path: str) -> int:
    return score(table, path)


def stdlib_files() -> list[str]:
    """Every ``.py`` file of the running Python's standard library (tests included,
    third-party ``site-packages`` not), sorted."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages"))
        found.extend(os.path.join(folder, f) for f in files if f.endswith(".py"))
    return sorted(found)


#: procpool's form of each peer task.
WITH_RESOURCE: dict[Callable[..., Any], Callable[..., Any]] = {
    noop: noop_r, spin: spin_r, spin_timed: spin_timed_r, busy: busy_r, pid_after: pid_after_r,
    gate: gate_r, score_file: score_file_r,
}


# -- the physical floor of a round trip --------------------------------------------------

_HEADER = struct.Struct("!I")


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_message(fd: int) -> bytes | None:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    return _read_exactly(fd, _HEADER.unpack(header)[0])


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    os.write(fd, _HEADER.pack(len(data)) + data)


def _echo(requests: int, replies: int) -> None:
    """The forked process: unpickle each request, pickle a reply."""
    while (message := _read_message(requests)) is not None:
        number, _fn, args = pickle.loads(message)
        _send(replies, (number, args[0]))


def measure_floor(round_trips: int) -> dict[str, float]:
    """A round trip to a forked echo process over two pipes (a small pickled message
    each way), the reply read by a reader thread that sets a concurrent.futures.Future
    the main thread waits on: what no process pool can go below."""
    to_echo_r, to_echo_w = os.pipe()
    from_echo_r, from_echo_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the echo process
        os.close(to_echo_w)
        os.close(from_echo_r)
        try:
            _echo(to_echo_r, from_echo_w)
        finally:
            os._exit(0)
    os.close(to_echo_r)
    os.close(from_echo_w)
    waiting: deque[Future[Any]] = deque()

    def reader() -> None:
        while (message := _read_message(from_echo_r)) is not None:
            waiting.popleft().set_result(pickle.loads(message)[1])

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    samples = []
    for i in range(round_trips + 20):
        t0 = time.perf_counter()
        future: Future[Any] = Future()
        waiting.append(future)
        _send(to_echo_w, (i, "noop", (i,)))
        assert future.result() == i
        if i >= 20:  # the first ones warm up both processes
            samples.append(time.perf_counter() - t0)
    os.close(to_echo_w)
    os.waitpid(pid, 0)
    thread.join()
    os.close(from_echo_r)
    return latency_summary(samples)


def latency_summary(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_us": samples[len(samples) // 2] * 1e6,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6,
        "mean_us": statistics.fmean(samples) * 1e6,
    }

"""Every pool of the peer benchmark behind one small interface, and what one fresh
interpreter measures on one of them (``bench_peers.py --child POOL``).

2 workers everywhere; the peers use a ``fork`` context where they take one, loky
its own default (``loky``: fork+exec); procpool its default start method, or
``fork`` as ``procpool-fork``.
"""

from __future__ import annotations

import array
import gc
import importlib.util
import inspect
import itertools
import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from _peers import tasks

WORKERS = 2

#: Pool names as ``--pools`` takes them, in the report's order.
POOLS = ("procpool", "procpool-fork", "ProcessPoolExecutor", "multiprocessing.Pool", "loky",
         "pebble", "billiard")
PEERS = POOLS[2:]
#: Pools run only when ``--pools`` names them: procpool on a LocalCluster of its own.
EXTRA_POOLS = ("procpool-dask",)
LABELS = {"procpool-fork": "procpool (fork)", "procpool-dask": "procpool (Dask)"}

#: The module a pool needs, where it is not the standard library.
NEEDS = {"procpool": "procpool", "procpool-fork": "procpool", "loky": "loky",
         "pebble": "pebble", "billiard": "billiard", "procpool-dask": "distributed"}


def label(pool: str) -> str:
    return LABELS.get(pool, pool)


def missing(pool: str) -> str | None:
    """Why ``pool`` cannot run here, or None."""
    module = NEEDS.get(pool)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    return None


class Pool:
    """One running pool: ``submitter(fn)(x)`` queues ``fn(x)`` and returns a handle,
    ``wait(handle)`` its result, ``map`` the results in order."""

    start_method = "fork"

    def submitter(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        raise NotImplementedError

    def wait(self, handle: Any) -> Any:
        return handle.result()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int | None = None) -> Iterable[Any]:
        """``chunksize`` None: the pool's own default."""
        raise NotImplementedError

    def default_chunksize(self, count: int) -> str:
        return "1"

    def close(self) -> None:
        """The graceful shutdown: run what is queued, let the workers leave."""
        raise NotImplementedError

    def kill(self) -> None:
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass

    def ready(self) -> bool:
        """Return once both workers ran a task (and so their initializer): True, or False
        if two tasks at once never reached two workers."""
        submit = self.submitter(tasks.pid_after)
        for _ in range(10):
            if len({self.wait(h) for h in [submit(0.05) for _ in range(WORKERS)]}) == WORKERS:
                return True
        return False


class Procpool(Pool):
    def __init__(self, start_method: str | None, workload: bool, dask: bool = False) -> None:
        import procpool

        config: procpool.Config[Any] = procpool.Config(
            on_create=tasks.build_table if workload else tasks.nothing,
            worker_count=WORKERS, resource_pool_size=0, start_method=start_method)
        self.start_method = config.effective_start_method
        backend = None
        if dask:
            from procpool.backends.dask import DaskBackend

            backend = DaskBackend()
        self.manager = procpool.TaskManager(config, backend=backend)

    def submitter(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return partial(self.manager.queue_task, tasks.WITH_RESOURCE[fn])

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int | None = None) -> Iterable[Any]:
        twin = tasks.WITH_RESOURCE[fn]
        if chunksize is None:
            return self.manager.map(twin, items)
        return self.manager.map(twin, items, chunksize=chunksize)

    def default_chunksize(self, count: int) -> str:
        import procpool

        default = inspect.signature(procpool.TaskManager.map).parameters["chunksize"].default
        return "adaptive" if default is None else str(default)

    def close(self) -> None:
        self.manager.stop()

    def kill(self) -> None:
        self.manager.kill()


class Executor(Pool):
    """ProcessPoolExecutor, and loky's executor."""

    def __init__(self, pool: str, workload: bool) -> None:
        initializer = tasks.init_table if workload else None
        if pool == "loky":
            import loky

            self.start_method = "loky"
            self.executor: Any = loky.get_reusable_executor(
                max_workers=WORKERS, initializer=initializer)
        else:
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(
                WORKERS, mp_context=multiprocessing.get_context("fork"), initializer=initializer)

    def submitter(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return partial(self.executor.submit, fn)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int | None = None) -> Iterable[Any]:
        if chunksize is None:
            return self.executor.map(fn, items)  # type: ignore[no-any-return]
        return self.executor.map(fn, items, chunksize=chunksize)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def kill(self) -> None:
        if self.start_method == "loky":
            self.executor.shutdown(wait=False, kill_workers=True)
            return
        super().kill()  # ProcessPoolExecutor has no kill before Python 3.14
        self.executor.shutdown(wait=False, cancel_futures=True)


class MpPool(Pool):
    """multiprocessing.Pool, and billiard's (a fork of it)."""

    def __init__(self, pool: str, workload: bool) -> None:
        context: Any = multiprocessing.get_context("fork")
        if pool == "billiard":
            import billiard

            context = billiard.get_context("fork")
        self.pool = context.Pool(WORKERS, initializer=tasks.init_table if workload else None)

    def submitter(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        apply_async = self.pool.apply_async
        return lambda x: apply_async(fn, (x,))

    def wait(self, handle: Any) -> Any:
        return handle.get()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int | None = None) -> Iterable[Any]:
        return self.pool.map(fn, items, chunksize)  # type: ignore[no-any-return]

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any],
             chunksize: int) -> Iterable[Any]:
        return self.pool.imap(fn, items, chunksize)  # type: ignore[no-any-return]

    def default_chunksize(self, count: int) -> str:
        chunks, extra = divmod(count, WORKERS * 4)  # Pool.map's rule for chunksize=None
        return f"auto (={chunks + bool(extra)})"

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def kill(self) -> None:
        self.pool.terminate()


class Pebble(Pool):
    def __init__(self, workload: bool) -> None:
        import pebble

        self.pool = pebble.ProcessPool(
            max_workers=WORKERS, initializer=tasks.init_table if workload else None,
            context=multiprocessing.get_context("fork"))

    def submitter(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        schedule = self.pool.schedule
        return lambda x: schedule(fn, (x,))

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            chunksize: int | None = None) -> Iterable[Any]:
        if chunksize is None:
            return self.pool.map(fn, items).result()  # type: ignore[no-any-return]
        return self.pool.map(fn, items, chunksize=chunksize).result()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def kill(self) -> None:
        self.pool.stop()
        self.pool.join()


def open_pool(pool: str, workload: bool = False) -> Pool:
    """A new pool; ``workload``: every worker builds the scoring table first."""
    if pool in ("procpool", "procpool-fork", "procpool-dask"):
        return Procpool("fork" if pool == "procpool-fork" else None, workload,
                        dask=pool == "procpool-dask")
    if pool in ("ProcessPoolExecutor", "loky"):
        return Executor(pool, workload)
    if pool in ("multiprocessing.Pool", "billiard"):
        return MpPool(pool, workload)
    if pool == "pebble":
        return Pebble(workload)
    raise ValueError(f"unknown pool {pool!r}; one of {', '.join(POOLS)}")


def start_method(pool: str) -> str:
    """The start method ``pool`` runs its workers with here."""
    if pool == "procpool":
        from procpool.config import default_start_method

        return default_start_method()
    if pool == "procpool-dask":
        return "dask"
    return "loky" if pool == "loky" else "fork"


#: The modules that hold each pool's class: imported before any clock starts, as a
#: program's own imports are (``procpool`` and ``concurrent.futures`` load them lazily).
IMPLEMENTATION = {"procpool": ("procpool.manager",), "procpool-fork": ("procpool.manager",),
                  "procpool-dask": ("procpool.manager", "procpool.backends.dask"),
                  "ProcessPoolExecutor": ("concurrent.futures.process",),
                  "multiprocessing.Pool": ("multiprocessing.pool",), "loky": ("loky",),
                  "pebble": ("pebble",), "billiard": ("billiard.pool",)}


def import_pool(pool: str) -> None:
    """Import what the pool needs before any clock starts."""
    for module in IMPLEMENTATION.get(pool, ()):
        importlib.import_module(module)


# -- what one fresh interpreter measures ------------------------------------------------


def _run_all(pool: Pool, fn: Callable[[Any], Any], args: Iterable[Any]) -> list[Any]:
    submit, wait = pool.submitter(fn), pool.wait
    return [wait(h) for h in [submit(x) for x in args]]


def measure_tiny(name: str, figures: set[str], c: dict[str, Any]) -> dict[str, Any]:
    """Submit one by one, ``map`` (default and chunksize=500), sequential round trips:
    one pool, in that order."""
    n, out = c["tiny"], {}
    pool = open_pool(name)
    submit, wait = pool.submitter(tasks.noop), pool.wait
    _run_all(pool, tasks.noop, range(100))
    expected = n * (n - 1) // 2
    if "submit" in figures:
        start = time.perf_counter()
        assert sum(wait(h) for h in [submit(i) for i in range(n)]) == expected
        out["submit_per_s"] = n / (time.perf_counter() - start)
    if "map" in figures:
        out["map_default_chunksize"] = pool.default_chunksize(n)
        for key, chunksize in (("map_default_per_s", None), ("map500_per_s", 500)):
            start = time.perf_counter()
            assert sum(pool.map(tasks.noop, range(n), chunksize)) == expected
            out[key] = n / (time.perf_counter() - start)
    if "roundtrip" in figures:
        samples = []
        for i in range(c["round_trips"]):
            t0 = time.perf_counter()
            wait(submit(i))
            samples.append(time.perf_counter() - t0)
        out.update({f"rtt_{k}": v for k, v in tasks.latency_summary(samples).items()})
    pool.close()
    return out


def measure_cpu(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """``cpu_tasks`` calibrated spins submitted one by one on a fresh pool whose workers
    are both up, then on another right after ``cpu_tiny`` tiny tasks: wall seconds, and
    the share of it the workers spent in the tasks (their own times, summed, over
    workers x wall): what the pool itself costs, whatever the loop's speed there. First
    the ideal: the same spins in bare processes forked from this interpreter."""
    out: dict[str, Any] = {
        "cpu_ideal_wall_s": tasks.bare_parallel_wall(c["cpu_tasks"], c["spin_n"], WORKERS)}
    for key, tiny in (("cpu_fresh", 0), ("cpu_after_tiny", c["cpu_tiny"])):
        pool = open_pool(name)
        out["both_up"] = pool.ready() and out.get("both_up", True)
        _run_all(pool, tasks.noop, range(tiny))
        start = time.perf_counter()
        ran = _run_all(pool, tasks.spin_timed, [c["spin_n"]] * c["cpu_tasks"])
        out[f"{key}_wall_s"] = wall = time.perf_counter() - start
        out[f"{key}_busy"] = sum(ran) / WORKERS / wall
        pool.close()
    return out


def measure_gap(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """``gap_tasks`` busy tasks of ``gap_ms`` submitted at once; per worker, the time
    from one task's end to the next one's start. The mean is the worker time the
    pool loses per task; the median alone hides a long tail."""
    pool = open_pool(name)
    pool.ready()
    spans = _run_all(pool, tasks.busy, [c["gap_ms"] / 1000] * c["gap_tasks"])
    pool.close()
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for pid, start, end in spans:
        by_worker.setdefault(pid, []).append((start, end))
    gaps = []
    for runs in by_worker.values():
        runs.sort()
        gaps += [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(runs)]
    gaps.sort()
    return {"gap_median_us": statistics.median(gaps) * 1e6,
            "gap_mean_us": statistics.mean(gaps) * 1e6,
            "gap_p90_us": gaps[int(len(gaps) * 0.9)] * 1e6, "gap_workers": len(by_worker)}


def measure_caller(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """Each of ``caller_tasks`` submit calls timed alone while the pool runs them."""
    n = c["caller_tasks"]
    pool = open_pool(name)
    pool.ready()
    submit, clock = pool.submitter(tasks.noop), time.perf_counter_ns
    handles: list[Any] = [None] * n
    times = array.array("q", [0]) * n
    full_before = gc.get_stats()[2]["collections"]
    start = time.perf_counter()
    for i in range(n):
        t0 = clock()
        handle = submit(i)
        times[i] = clock() - t0
        handles[i] = handle
    loop = time.perf_counter() - start
    full_gcs = gc.get_stats()[2]["collections"] - full_before
    assert sum(pool.wait(h) for h in handles) == n * (n - 1) // 2
    pool.close()
    ordered = sorted(times)
    return {"call_p50_us": ordered[n // 2] / 1e3, "call_p99_us": ordered[int(n * 0.99)] / 1e3,
            "call_max_ms": ordered[-1] / 1e6, "call_loop_s": loop, "call_full_gcs": full_gcs}


def measure_memory(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """Both workers held on a gate, then ``memory_tasks`` no-ops queued: how much the
    caller's RSS grew. The pool is killed, its queue never runs."""
    n = c["memory_tasks"]
    folder = tempfile.mkdtemp(prefix="peer-bench-gate-")
    try:
        pool = open_pool(name)
        pool.ready()
        gate, submit = pool.submitter(tasks.gate), pool.submitter(tasks.noop)
        held = [gate(folder) for _ in range(WORKERS)]
        deadline = time.monotonic() + 30
        while len(list(Path(folder).glob("started-*"))) < WORKERS:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        blocked = len(list(Path(folder).glob("started-*"))) == WORKERS
        handles: list[Any] = [None] * n
        gc.collect()
        process = psutil.Process()
        before = process.memory_info().rss
        start = time.perf_counter()
        for i in range(n):
            handles[i] = submit(i)
        loop = time.perf_counter() - start
        growth = process.memory_info().rss - before
        Path(folder, "open").touch()
        out = {"rss_growth_mb": growth / 1e6, "rss_bytes_per_task": growth / n,
               "memory_loop_s": loop, "memory_blocked": blocked}
        try:
            pool.kill()
        except Exception as exc:  # the figure stands; the child cleans up what is left
            out["kill_error"] = repr(exc)
        del held, handles
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def measure_lifecycle(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """Constructor to the first result of a no-op; the graceful stop after ``idle_s``
    idle seconds. The first pool of a fresh interpreter."""
    t0 = time.perf_counter()
    pool = open_pool(name)
    t1 = time.perf_counter()
    pool.wait(pool.submitter(tasks.noop)(0))
    t2 = time.perf_counter()
    time.sleep(c["idle_s"])
    t3 = time.perf_counter()
    pool.close()
    t4 = time.perf_counter()
    return {"ctor_ms": (t1 - t0) * 1e3, "first_result_ms": (t2 - t0) * 1e3,
            "idle_stop_ms": (t4 - t3) * 1e3}


#: Real-workload modes: key -> what the report calls it.
WORKLOAD_MODES = {"map": "map (default)", "map16": "map chunksize=16",
                  "imap16": "imap chunksize=16", "one": "one by one"}


def workload_modes(name: str) -> list[str]:
    if name in ("multiprocessing.Pool", "billiard"):
        return ["map", "map16", "imap16", "one"]
    return ["map", "map16", "one"]


def measure_workload(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """Score the stdlib's files, each mode on a fresh pool whose workers both built
    their table: seconds and the total score per mode."""
    files = tasks.stdlib_files()[: c["files"]]
    out: dict[str, Any] = {"workload_files": len(files)}
    for mode in workload_modes(name):
        pool = open_pool(name, workload=True)
        pool.ready()
        start = time.perf_counter()
        if mode == "one":
            total = sum(_run_all(pool, tasks.score_file, files))
        elif mode == "imap16":
            assert isinstance(pool, MpPool)
            total = sum(pool.imap(tasks.score_file, files, 16))
        else:
            total = sum(pool.map(tasks.score_file, files, 16 if mode == "map16" else None))
        out[f"workload_{mode}_s"] = time.perf_counter() - start
        out[f"workload_{mode}_score"] = total
        pool.close()
    return out


#: Child runs: each group of figures measured in its own fresh interpreter.
GROUPS: dict[str, tuple[str, ...]] = {
    "tiny": ("submit", "map", "roundtrip"), "cpu": ("cpu",), "gap": ("gap",),
    "caller": ("caller",), "memory": ("memory",), "lifecycle": ("lifecycle",),
    "workload": ("workload",),
}
FIGURES = tuple(f for figures in GROUPS.values() for f in figures)


def measure(name: str, group: str, figures: set[str], c: dict[str, Any]) -> dict[str, Any]:
    import_pool(name)
    if group == "tiny":
        return measure_tiny(name, figures, c)
    measures: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
        "cpu": measure_cpu, "gap": measure_gap, "caller": measure_caller,
        "memory": measure_memory, "lifecycle": measure_lifecycle,
        "workload": measure_workload,
    }
    return measures[group](name, c)

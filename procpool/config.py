"""Config: every knob of a :class:`~procpool.TaskManager`, checked at once.

A wrong value raises ``TypeError`` or ``ValueError`` naming the field and
what it accepts, when the Config is built, not later inside a worker.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

R = TypeVar("R")

#: File descriptors the caller's process holds per worker (its pipe, its process
#: sentinel, its progress slots): what bounds the largest pool the process can run.
FDS_PER_WORKER = 3

#: Descriptors left for everything else the caller has open.
FDS_RESERVED = 32

#: Start methods a user may ask for.
START_METHODS = ("fork", "forkserver", "spawn")


def default_start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn``.

    The supervisor runs threads, and ``fork`` from a threaded process can
    copy a lock held by another thread into the child, which then deadlocks
    (Python 3.12+ warns about it). ``forkserver`` forks from a clean,
    single-threaded server process (procpool's own, one per pool, which has
    imported the main module and ``on_create``'s module once; a caller that
    runs a single thread forks the first workers itself): as safe as
    ``spawn``, and a worker started in a running pool takes a few ms instead
    of ~0.1 s (see BENCHMARKS.md, "Worker start-up").
    """
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _default_worker_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Config(Generic[R]):
    """How a TaskManager builds and runs its workers.

    ``on_create`` is required: it runs once in every worker process and
    returns the resource (a model, a compiled rule set, ...) that every task
    of that worker receives as its first argument.
    """

    on_create: Callable[[], R]
    #: Runs in the worker with its resource when the worker leaves gracefully.
    on_destroy: Callable[[R], None] | None = None
    #: Base workers, always kept alive.
    worker_count: int = field(default_factory=_default_worker_count)
    #: Upper bound of base + burst workers; None means ``worker_count`` (no bursting).
    max_worker_count: int | None = None
    #: Seconds between burst decisions; None or 0 disables bursting.
    burst_interval: float | None = 0.2
    #: Seconds over which the burst loop keeps the largest size it asked for before idle
    #: burst workers leave (the stabilisation window of an autoscaler); never less than a
    #: worker's measured start-up time (spawn + on_create), since keeping an idle worker as
    #: long as it took to start one never costs more than twice the best choice made in
    #: hindsight (the ski-rental rule). Longer keeps warm workers through lulls (idle
    #: memory) and scales less often; shorter gives memory back sooner but may retire
    #: workers the next wave needs. 1 s outlasts the gaps of a producer working in
    #: sub-second waves (BENCHMARKS.md, "Elasticity (burst scaling)", compares it with 2 s).
    burst_cooldown: float = 1.0
    #: Retries of a task whose worker was unhealthy or died under it; 0 means none.
    max_retries: int = 0
    #: ``check_health(exc) -> bool``, called in the worker when a task raises: False (or
    #: raising) means the resource is broken: the worker runs ``on_destroy`` and is replaced.
    check_health: Callable[[BaseException], bool] | None = None
    #: Worker processes reserved for ``run_task``.
    resource_pool_size: int = 1
    #: ``None`` picks :func:`default_start_method`; else one of :data:`START_METHODS`.
    start_method: str | None = None
    #: Default timeout of every task in seconds, counted from its start in the worker; None
    #: means no limit. A task over it has its worker terminated (SIGTERM, then SIGKILL), so a
    #: timed task costs a worker restart when it overruns, and is sent alone (no batching).
    task_timeout: float | None = None
    #: Recycle a worker after this many tasks (``on_destroy``, then a fresh worker); None
    #: means never. Each recycle costs a process start plus ``on_create``: with a trivial
    #: ``on_create``, ~15 ms of wall time per recycle with forkserver or fork, ~0.1 s with
    #: spawn (2 workers, 2 cores, scripts/bench_recycling.py).
    max_tasks_per_worker: int | None = None
    #: Recycle a worker whose RSS exceeds this many bytes after a task; None means never.
    #: The check reads RSS after every task: ~5 us per task on Linux (bench_recycling.py).
    max_memory_per_worker: int | None = None
    #: Seconds a worker's ``on_create`` may take, counted from its process start; None means
    #: no limit. A worker over it is killed and counts as a failed create: the constructor
    #: raises :class:`~procpool.ResourceCreationError`, later starts go through the restart
    #: backoff. Set it when a resource can hang (a licence server that never answers).
    create_timeout: float | None = None
    #: Seconds a leaving worker's ``on_destroy`` may take before the worker is killed (with a
    #: warning); None means no limit, so a hanging ``on_destroy`` would hang ``stop()``. 30 s
    #: leaves room to flush or unload a heavy resource; lower it to stop faster.
    destroy_timeout: float | None = 30.0
    #: Seconds of history behind arrival and completion rates.
    metrics_window: float = 2.0
    #: A user metrics collector (a :class:`procpool.MetricsCollector`); None: the built-in one.
    collector: Any = None
    #: Write :meth:`TaskManager.dump_stats` to this JSON file every ``stats_dump_interval``.
    stats_dump_path: str | os.PathLike[str] | None = None
    stats_dump_interval: float = 1.0

    def __post_init__(self) -> None:
        _check_callable("on_create", self.on_create, required=True)
        _check_callable("on_destroy", self.on_destroy)
        _check_callable("check_health", self.check_health)
        _check_int("worker_count", self.worker_count, minimum=1)
        if self.max_worker_count is not None:
            _check_int("max_worker_count", self.max_worker_count, minimum=self.worker_count,
                       hint="(it must be >= worker_count)")
        _check_seconds("burst_interval", self.burst_interval, allow_zero=True)
        _check_seconds("burst_cooldown", self.burst_cooldown, allow_zero=True, required=True)
        _check_int("max_retries", self.max_retries, minimum=0)
        _check_int("resource_pool_size", self.resource_pool_size, minimum=0)
        if self.start_method is not None:
            allowed = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
            if self.start_method not in allowed:
                raise ValueError(
                    f"Config.start_method must be None or one of {allowed}, "
                    f"got {self.start_method!r}"
                )
        _check_seconds("task_timeout", self.task_timeout)
        _check_seconds("create_timeout", self.create_timeout)
        _check_seconds("destroy_timeout", self.destroy_timeout)
        if self.max_tasks_per_worker is not None:
            _check_int("max_tasks_per_worker", self.max_tasks_per_worker, minimum=1)
        if self.max_memory_per_worker is not None:
            _check_int("max_memory_per_worker", self.max_memory_per_worker, minimum=1)
        _check_seconds("metrics_window", self.metrics_window, required=True)
        _check_seconds("stats_dump_interval", self.stats_dump_interval, required=True)
        if self.stats_dump_path is not None:
            _check_dump_path(self.stats_dump_path)
        _check_fd_limit(self)

    @property
    def effective_max_workers(self) -> int:
        return self.worker_count if self.max_worker_count is None else self.max_worker_count

    @property
    def bursting(self) -> bool:
        """True when the burst loop can start extra workers."""
        return bool(self.burst_interval) and self.effective_max_workers > self.worker_count

    @property
    def effective_start_method(self) -> str:
        return self.start_method or default_start_method()


def _check_callable(name: str, value: object, required: bool = False) -> None:
    if value is None and not required:
        return
    if not callable(value):
        need = "a callable" if required else "a callable or None"
        raise TypeError(f"Config.{name} must be {need}, got {value!r}")


def _check_int(name: str, value: object, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Config.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"Config.{name} must be >= {minimum}{' ' + hint if hint else ''}, "
                         f"got {value}")


def _check_fd_limit(config: Config[Any]) -> None:
    """Refuse a pool larger than this process's open-file limit can hold, now, not
    with ``Too many open files`` at the hundredth worker."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return
    if soft == resource.RLIM_INFINITY:
        return
    workers = config.effective_max_workers + config.resource_pool_size
    most = max(1, (soft - FDS_RESERVED) // FDS_PER_WORKER)
    if workers <= most:
        return
    name = "worker_count" if config.max_worker_count is None else "max_worker_count"
    raise ValueError(
        f"Config.{name}={getattr(config, name)} (with resource_pool_size="
        f"{config.resource_pool_size}) needs about {workers * FDS_PER_WORKER} open files in"
        f" this process, over its limit of {soft} (RLIMIT_NOFILE): at most {most} workers fit."
        f" Raise the limit (ulimit -n, resource.setrlimit) or use fewer workers"
    )


def _check_dump_path(path: object) -> None:
    """Fail now, not with a warning at every dump, when the file cannot be written there."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Config.stats_dump_path must be a path or None, got {path!r}")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise ValueError(f"Config.stats_dump_path: folder {folder!r} does not exist")


def _check_seconds(name: str, value: object, allow_zero: bool = False,
                   required: bool = False) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a number of seconds" if required else "a number of seconds or None"
        raise TypeError(f"Config.{name} must be {kind}, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Config.{name} must be a finite number {bound} (seconds), got {value}")

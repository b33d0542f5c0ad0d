"""``procpool.Executor``: a ``concurrent.futures.Executor`` that survives crashes.

A second facade over the same engine as :class:`~procpool.TaskManager` (it
runs one, started at the first ``submit``), for code that already speaks
``concurrent.futures``: ``submit``, ``map``, ``wait``, ``as_completed``,
``loop.run_in_executor``. Swapping one import gives that code crash
survival, timeouts, bursting and metrics.

The one deliberate difference from ``ProcessPoolExecutor``: a worker that
dies fails only the future of the task it was running, with
:class:`~procpool.WorkerCrashedError` (a ``BrokenProcessPool``, so existing
``except`` clauses still catch it), and the executor keeps serving with a
replacement worker. ``ProcessPoolExecutor`` breaks for good instead.

Any thread may call it. Tasks run in other processes, so ``fn`` and its
arguments are pickled (with cloudpickle: lambdas and closures work).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, ParamSpec, TypeVar

from procpool.config import START_METHODS, Config
from procpool.errors import BrokenPoolError, ResourceCreationError, ShutdownError
from procpool.manager import TaskManager
from procpool.supervisor.bursting import usable_cores
from procpool.tasks import WithoutResource

P = ParamSpec("P")
T = TypeVar("T")

#: Where a failing initializer is reported, as ProcessPoolExecutor does.
_log = logging.getLogger("concurrent.futures")


class Executor(futures.Executor):
    """A process pool executor with ``ProcessPoolExecutor``'s signature and contract.

    ``max_workers`` (None: the usable CPU count) workers each run
    ``initializer(*initargs)`` once; ``mp_context`` is a multiprocessing
    context or a start method name (None: procpool's default,
    ``forkserver``). ``max_tasks_per_child`` recycles a worker after that
    many tasks. procpool's own options, keyword-only: ``max_burst_workers``
    extra workers started under load (0: none), ``burst_interval`` seconds
    between burst decisions (None: procpool's default), ``task_timeout``
    seconds after which a task's worker is terminated and its future fails
    with :class:`~procpool.TaskTimeoutError` (None: no limit).

    A failing initializer makes the executor broken: ``submit`` then raises
    :class:`~procpool.BrokenPoolError` (a ``BrokenExecutor``), and so do
    the futures waiting for it.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        max_burst_workers: int = 0,
        burst_interval: float | None = None,
        task_timeout: float | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = usable_cores()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None and (
                not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1):
            raise ValueError("max_tasks_per_child must be >= 1")
        if max_burst_workers < 0:
            raise ValueError("max_burst_workers must be >= 0")
        options: dict[str, Any] = {}
        if burst_interval is not None:
            options["burst_interval"] = burst_interval
        self._config: Config[None] = Config(
            on_create=functools.partial(_initialize, initializer, tuple(initargs)),
            worker_count=max_workers,
            max_worker_count=max_workers + max_burst_workers,
            resource_pool_size=0,
            start_method=_start_method(mp_context),
            max_tasks_per_worker=max_tasks_per_child,
            task_timeout=task_timeout,
            **options,
        )
        self._lock = threading.Lock()
        self._manager: TaskManager[None] | None = None
        self._shutdown = False
        #: False, or why the executor is broken (as ProcessPoolExecutor's attribute)
        self._broken: str | bool = False

    @property
    def manager(self) -> TaskManager[None]:
        """The :class:`~procpool.TaskManager` underneath (started if need be): its
        ``stats()``, ``metrics()`` and ``dump_stats()``; after shutdown, the one that ran."""
        with self._lock:
            if self._manager is not None:
                return self._manager
        return self._pool()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> futures.Future[T]:
        """Schedule ``fn(*args, **kwargs)``; returns its :class:`~concurrent.futures.Future`."""
        try:
            return self._pool().submit(WithoutResource(fn), args, kwargs)
        except ShutdownError:
            raise RuntimeError("cannot schedule new futures after shutdown") from None

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``fn`` over the iterables, results in order, lazily, as ``TaskManager.map``:
        items travel in chunks sized by their time unless ``chunksize`` says (1: one
        task per item); at most ``buffersize`` tasks run ahead of the result being
        waited for. An item's exception is raised at that item; ``timeout`` counts
        from this call."""
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        try:
            return self._pool().map(WithoutResource(fn), *iterables, chunksize=chunksize,
                                    timeout=timeout, buffersize=buffersize)
        except ShutdownError:
            raise RuntimeError("cannot schedule new futures after shutdown") from None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; ``cancel_futures`` cancels the queued ones; ``wait``
        returns once the running ones finished and every worker left."""
        with self._lock:
            self._shutdown = True
            manager = self._manager
        if manager is None:
            return
        if cancel_futures:
            manager.cancel_queued()
        manager.stop(wait=wait)

    def _pool(self) -> TaskManager[None]:
        """The running manager, started at the first call (as ProcessPoolExecutor starts
        its processes at the first submit)."""
        with self._lock:
            if self._shutdown:
                raise ShutdownError("cannot schedule new futures after shutdown")
            if self._broken:
                raise BrokenPoolError(str(self._broken))
            if self._manager is None:
                try:
                    self._manager = TaskManager(self._config)
                except ResourceCreationError as exc:
                    self._broken = (f"A worker's initializer failed; the executor is broken: "
                                    f"{exc}")
                    raise BrokenPoolError(self._broken) from exc
            return self._manager


def _initialize(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """Runs in each worker as its ``on_create``: the user's initializer, logged if it fails."""
    if initializer is None:
        return
    try:
        initializer(*initargs)
    except BaseException:
        _log.critical("Exception in initializer:", exc_info=True)
        raise


def _start_method(mp_context: Any) -> str | None:
    if mp_context is None or isinstance(mp_context, str):
        return mp_context
    if isinstance(mp_context, multiprocessing.context.BaseContext):
        method: str = mp_context.get_start_method()
        return method
    raise TypeError(f"mp_context must be a multiprocessing context or one of {START_METHODS},"
                    f" got {mp_context!r}")

"""TaskManager: the public face of a pool of resource-owning workers.

Callable from any thread. The work happens on the supervisor thread (see
:mod:`procpool.supervisor`) and in the worker processes; this class only
builds tasks, hands them over and waits when asked to.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from time import monotonic
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

from procpool._log import logger
from procpool.backends.base import Backend
from procpool.backends.local import LocalBackend  # here: its import is not the pool's start
from procpool.chunking import MAX_CHUNK_ITEMS, ChunkSizer, ItemTimes
from procpool.config import Config, _check_seconds
from procpool.mapping import (
    CHUNKS_AHEAD_PER_WORKER,
    TASKS_AHEAD_PER_WORKER,
    AsDone,
    InOrder,
    results,
)
from procpool.metrics import Metrics
from procpool.policy.restarts import RestartBreaker
from procpool.progress import length_of
from procpool.shutdown import left, stop_escalating
from procpool.supervisor import Stats, Supervisor, _live_supervisors
from procpool.tasks import MapChunk, Task, TaskFuture, TaskOwner, kind_of

if TYPE_CHECKING:
    from procpool.procstats import StatsDumper

R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")


class TaskManager(Generic[R]):
    """Runs ``fn(resource, *args, **kwargs)`` on worker processes that each own a resource.

    Each worker calls ``config.on_create()`` once, runs many tasks with the
    resource it returned, and calls ``config.on_destroy(resource)`` when it
    leaves. The constructor returns once every base and reserved worker is
    ready, and raises :class:`~procpool.ResourceCreationError` (leaving no
    process behind) if any ``on_create`` fails.

    ``backend`` says where workers run: None is this machine
    (:class:`procpool.backends.LocalBackend`); any
    :class:`procpool.backends.Backend` may take its place.

    Use it as a context manager: ``__exit__`` calls :meth:`stop`, which runs
    every queued task first. It is *not* a thread pool: tasks run in other
    processes, so they receive copies of their arguments.
    """

    def __init__(
        self,
        config: Config[R],
        *,
        backend: Backend | None = None,
        _breaker: RestartBreaker | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"TaskManager needs a procpool.Config, got {type(config).__name__}")
        if backend is not None and not isinstance(backend, Backend):
            raise TypeError(f"TaskManager(backend=) needs a procpool.backends.Backend,"
                            f" got {type(backend).__name__}")
        self.config = config
        if backend is None:
            backend = LocalBackend()
        self._supervisor = Supervisor(config, backend, _breaker)
        self._item_times = ItemTimes()  # what map items of each function took
        self._dumper: StatsDumper | None = None
        self._dumper_lock = threading.Lock()
        if config.stats_dump_path is not None:
            # The hook holds the dumper and the supervisor, never this facade.
            self._supervisor.set_dump_hook(
                functools.partial(self._stats_dumper().write, config.stats_dump_path)
            )
        _live_supervisors.add(self._supervisor)
        # What each TaskFuture reports cancels and hands callbacks to.
        self._owner: weakref.ref[TaskOwner] = weakref.ref(self._supervisor)
        self._supervisor.start()
        # A manager the caller forgot still drains and exits: the supervisor
        # thread holds no reference to this facade, only to the supervisor.
        # Not at interpreter exit: procpool.shutdown decides how to stop then.
        weakref.finalize(self, self._supervisor.begin_stop).atexit = False

    # -- submitting -------------------------------------------------------------

    def submit(
        self,
        fn: Callable[Concatenate[R, ...], T],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: bool = False,
        once: bool = False,
        timeout: float | None = None,
    ) -> TaskFuture[T]:
        """Queue ``fn(resource, *args, **kwargs)``; the general form of every ``queue_task*``.

        ``priority`` tasks all start before any normal task; ``once`` tasks are
        never retried; ``timeout`` (seconds) overrides ``Config.task_timeout``.
        """
        return self._submit(fn, tuple(args), kwargs or {}, priority, once, timeout, False)

    def queue_task(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskFuture[T]:
        """Queue a normal task; retried on an unhealthy or crashed worker if allowed."""
        return self._submit(fn, args, kwargs, False, False, None, False)

    def queue_task_with_priority(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskFuture[T]:
        """Queue a task that starts before every normal task."""
        return self._submit(fn, args, kwargs, True, False, None, False)

    def queue_task_once(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskFuture[T]:
        """Queue a task that is never retried."""
        return self._submit(fn, args, kwargs, False, True, None, False)

    def queue_task_with_priority_once(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskFuture[T]:
        """Queue a priority task that is never retried."""
        return self._submit(fn, args, kwargs, True, True, None, False)

    def run_task(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a task now, bypassing the queues, and return its result.

        It runs on one of ``resource_pool_size`` reserved workers; when all of
        them are busy, on a temporary worker started for it (it runs
        ``on_create`` and ``on_destroy`` like any other). At most
        ``max_worker_count`` temporary workers run at once: further calls wait,
        ahead of every queued task, for the first reserved or temporary worker
        that frees up.
        """
        return self._submit(fn, args, kwargs, False, False, None, True).result()

    def _submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: bool,
        once: bool,
        timeout: float | None,
        immediate: bool,
    ) -> TaskFuture[T]:
        if not callable(fn):
            raise TypeError(f"a task must be callable, got {type(fn).__name__} {fn!r}")
        if timeout is not None:
            _check_seconds("timeout", timeout)
        task = self._new_task(fn, args, kwargs, priority=priority, once=once, timeout=timeout,
                              immediate=immediate)
        self._supervisor.submit(task)
        return task.future

    def _new_task(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        priority: bool = False,
        once: bool = False,
        timeout: float | None = None,
        immediate: bool = False,
        queued_at: float | None = None,
        kind: Hashable = None,
    ) -> Task:
        """A task and its future, ready to submit. ``timeout`` None: the Config's."""
        future: TaskFuture[Any] = TaskFuture()
        task = Task(0, fn, args, kwargs, future, priority=priority, once=once,
                    timeout=self.config.task_timeout if timeout is None else timeout,
                    immediate=immediate,
                    queued_at=monotonic() if queued_at is None else queued_at, kind=kind)
        future._task = task
        future._owner = self._owner
        return task

    def map(
        self,
        fn: Callable[Concatenate[R, ...], T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[T]:
        """Like built-in ``map``, run on the pool: results in input order, lazily.

        Items travel in chunks sized by how long they take (about 50 ms of work
        each, see :mod:`procpool.chunking`): the first item per worker goes
        alone, so slow items are never lumped together, while tiny ones reach
        ``multiprocessing.Pool``'s speed without tuning. ``chunksize=n`` fixes
        the size instead (1: one task per item). Each chunk is one task in the
        queue, so priority tasks still go first. The input is read as results
        are taken, so an endless generator works in constant memory: at most
        ``buffersize`` tasks are submitted ahead of the one being waited for
        (by default 4 chunks per worker, or more small chunks, up to 128 items
        per worker, or 128 tasks per worker with a ``chunksize``); without a
        ``chunksize``, ``buffersize`` counts items.
        An item's exception is raised at that item, after the results before
        it (a chunk that cannot be pickled fails as a whole, its error naming
        the item). ``timeout`` bounds the wait for all results, counted from
        this call. Leaving the loop early (or dropping the iterator) cancels
        what is queued and reads no more input. ``progress=True`` draws a
        progress bar on stderr (needs rich).
        """
        return self._map(fn, iterables, chunksize, timeout, buffersize, progress, ordered=True)

    def map_unordered(
        self,
        fn: Callable[Concatenate[R, ...], T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[T]:
        """As :meth:`map`, but results come as their tasks finish (multiprocessing's
        ``imap_unordered``): a slow item holds up no other chunk."""
        return self._map(fn, iterables, chunksize, timeout, buffersize, progress, ordered=False)

    def _map(
        self,
        fn: Callable[..., T],
        iterables: tuple[Iterable[Any], ...],
        chunksize: int | None,
        timeout: float | None,
        buffersize: int | None,
        progress: bool,
        ordered: bool,
    ) -> Iterator[T]:
        if chunksize is not None and (
                isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be None or an int >= 1, got {chunksize!r}")
        if buffersize is not None and (
                isinstance(buffersize, bool) or not isinstance(buffersize, int) or buffersize < 1):
            raise ValueError(f"buffersize must be None or an int >= 1, got {buffersize!r}")
        deadline = None if timeout is None else monotonic() + timeout
        length = length_of(iterables)
        workers = self.config.effective_max_workers
        spread = len(iterables) != 1  # items are tuples of arguments
        items = zip(*iterables) if spread else iter(iterables[0])  # noqa: B905 -- like map()
        window = buffersize or (TASKS_AHEAD_PER_WORKER if chunksize else
                                CHUNKS_AHEAD_PER_WORKER) * workers
        most = MAX_CHUNK_ITEMS
        if chunksize is None and buffersize is not None:  # at most buffersize items ahead
            window = min(buffersize, CHUNKS_AHEAD_PER_WORKER * workers)
            most = buffersize // window
        fn_kind = kind_of(fn)
        self._item_times.seed(fn_kind, self._supervisor.task_seconds(fn_kind))
        sizer = None if chunksize == 1 else ChunkSizer(
            chunksize, workers, length, most, (self._item_times, fn_kind))
        chunk_fn = MapChunk(fn, spread)

        def chunks(sizer: ChunkSizer) -> Iterator[tuple[Callable[..., Any], tuple[Any, ...],
                                                        Hashable]]:
            while chunk := list(itertools.islice(items, size := sizer.next_size())):
                yield chunk_fn, (chunk,), ("map chunk", fn_kind, size.bit_length())

        def submit(count: int) -> list[Future[Any]]:
            calls: list[tuple[Callable[..., Any], tuple[Any, ...], Hashable]] = []
            if sizer is None:  # one task per item
                calls = [(fn, item if spread else (item,), fn_kind)
                         for item in itertools.islice(items, count)]
            else:
                calls = list(itertools.islice(chunks(sizer), count))
            now = monotonic()
            tasks = [self._new_task(call, args, {}, queued_at=now, kind=kind)
                     for call, args, kind in calls]
            if tasks:
                self._supervisor.submit_many(tasks)
            return [task.future for task in tasks]

        # Chunks sized by time: a window of a few, or of as many as carry as many
        # items as single-item tasks would (slow items: one long item the caller
        # waits for must not leave the other workers idle). buffersize bounds it.
        items_ahead = TASKS_AHEAD_PER_WORKER * workers if buffersize is None else 0
        belt = (InOrder if ordered else AsDone)(submit, window, sizer, workers, deadline,
                                                items_ahead)
        values: Iterator[T] = results(belt)
        if progress:
            from procpool.progress import ProgressResults

            name = getattr(getattr(fn, "func", fn), "__qualname__", "map")
            values = ProgressResults(values, length, name)
        return values

    # -- asyncio ----------------------------------------------------------------

    async def queue_task_async(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await`` form of :meth:`queue_task`; cancelling the await cancels a queued task."""
        return await asyncio.wrap_future(self.queue_task(fn, *args, **kwargs))

    async def queue_task_with_priority_async(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await asyncio.wrap_future(self.queue_task_with_priority(fn, *args, **kwargs))

    async def queue_task_once_async(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await asyncio.wrap_future(self.queue_task_once(fn, *args, **kwargs))

    async def queue_task_with_priority_once_async(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await asyncio.wrap_future(self.queue_task_with_priority_once(fn, *args, **kwargs))

    async def run_task_async(
        self, fn: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await`` form of :meth:`run_task`: the event loop is not blocked."""
        future = self._submit(fn, args, kwargs, False, False, None, True)
        return await asyncio.wrap_future(future)

    # -- control ----------------------------------------------------------------

    def cancel(self, future: Future[Any], *, terminate: bool = False) -> bool:
        """Cancel a task: queued ones always; a running one only with ``terminate=True``,
        which terminates its worker (a replacement starts) and fails the future with
        ``CancelledError``."""
        if future.cancel():
            return True
        task = getattr(future, "_task", None)
        if not terminate or task is None or future.done():
            return False
        self._supervisor.request_terminate(task)
        return True

    def stop(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Refuse new tasks, run every queued one, then let every worker leave gracefully.

        Returns when all worker processes have exited and the done-callbacks
        of finished tasks have run; at once with ``wait=False`` (the pool
        stops in the background). If that takes longer than ``timeout``
        seconds, escalates to :meth:`kill` (and logs it). Idempotent and safe
        from several threads, and from a done-callback (which does not wait
        for the callbacks behind it).
        """
        deadline = None if timeout is None else monotonic() + timeout
        supervisor = self._supervisor
        supervisor.begin_stop()
        if not wait:
            return
        if supervisor.join(timeout) and supervisor.callbacks.join(left(deadline)):
            return
        if supervisor.callbacks.on_own_thread():
            return
        logger.warning("procpool stop() did not finish within {} s; killing the pool", timeout)
        self.kill()

    def cancel_queued(self) -> None:
        """Refuse new tasks and cancel every queued one; running tasks finish.

        The supervisor cancels them at its next pass, after giving free workers
        what they can take at once (those tasks run). Follow it with
        :meth:`stop` to wait for the running ones and let the workers leave.
        """
        self._supervisor.cancel_queued()

    def kill(self) -> None:
        """Cancel queued tasks, terminate every worker now, fail running tasks with
        :class:`~procpool.ShutdownError`. Returns when every process is gone. Idempotent,
        also during or after :meth:`stop`. Does not wait for done-callbacks."""
        self._supervisor.begin_kill()
        self._supervisor.join()

    def __enter__(self) -> TaskManager[R]:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Leaving the block normally, or by an ``Exception``: :meth:`stop` (drain the queue).

        Leaving by Ctrl-C (``KeyboardInterrupt``) or ``SystemExit``: cancel the
        queued tasks and let the running ones finish, then return. A Ctrl-C
        while either waits escalates one step (drain, then cancel the queue,
        then kill) and is raised once the pool is down.
        """
        interrupted = exc is not None and not isinstance(exc, Exception)
        stop_escalating([self._supervisor], cancel_queued=interrupted, reraise=True)

    # -- looking ----------------------------------------------------------------

    def stats(self) -> Stats:
        """Workers and queues right now."""
        return self._supervisor.stats()

    def metrics(self) -> Metrics:
        """Rates, execution-time percentiles and totals (see :class:`procpool.Metrics`)."""
        return self._supervisor.metrics()

    def dump_stats(self) -> dict[str, Any]:
        """Stats, metrics and every process of the pool, as a JSON-ready dict.

        ``{"time": <unix seconds>, "stats": {...}, "metrics": {...}, "processes": [...]}``:
        ``stats`` and ``metrics`` are :meth:`stats` and :meth:`metrics` as
        dicts; ``processes`` holds this process (role ``"supervisor"``, state
        ``running``/``stopping``/``killed``), the pool's fork server if it has
        one (role ``"fork-server"``, state ``running``: the ``forkserver``
        start method) and then each worker (role
        ``base``/``burst``/``reserved``/``temporary``, state
        ``starting``/``idle``/``busy``/``leaving``), each with ``pid``,
        ``worker_id``, ``cpu_percent``, ``rss_bytes``, ``num_threads``,
        ``tasks_done`` and ``uptime_seconds``. ``cpu_percent`` covers the time
        since the previous call (0.0 on the first); a worker still inside
        ``on_create`` has no pid yet and ``None`` figures. Cheap enough to call
        several times a second (see ``scripts/bench_dump_stats.py``).
        """
        return self._stats_dumper().snapshot()

    def _stats_dumper(self) -> StatsDumper:
        with self._dumper_lock:
            if self._dumper is None:
                from procpool.procstats import StatsDumper  # psutil only when asked for

                self._dumper = StatsDumper(self._supervisor)
            return self._dumper

    def worker_pids(self) -> list[int]:
        """Process ids of the pool's current workers, any role: those inside
        ``on_create``, idle or busy, as the supervisor knows them now.

        A worker that is leaving (recycled, retired, timed out, terminated, or
        inside ``on_destroy``) is not one of them, even while its process still
        runs: :meth:`dump_stats` lists every process. For monitoring, and for
        killing a worker on purpose to see the pool heal.
        """
        return [w.pid for w in self._supervisor.worker_handles()
                if w.live and w.pid is not None]

    @property
    def stopped(self) -> bool:
        """True once every worker has exited after :meth:`stop` or :meth:`kill`."""
        return self._supervisor.finished

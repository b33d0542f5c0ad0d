"""The Dask backend's view of the cluster: which Dask workers exist, which procpool
worker each serves, and resizing the cluster.

Supervisor thread only, but for :class:`SchedulerWatch`, whose thread reads the
scheduler's worker list every ``interval`` and hands it over through the
backend's inbox (the scheduler tells no client when a worker joins or leaves).
A Dask worker serves one procpool worker at a time, and only one with a single
thread (two threads would run two tasks on one resource at once).

Resizing follows the burst controller, never Dask's own ``Adaptive``: growth
is ``cluster.scale(n)``; shrinking names the very Dask worker whose procpool
worker has ended (its resource already destroyed), so no busy worker is ever
picked by the cluster's own choice.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, NamedTuple

from procpool._log import logger

#: How long a Dask worker being closed is remembered after it left the scheduler's list.
#: It must outlast a nanny's restart of a killed worker; a reused address later is harmless.
CLOSING_MEMORY_SECONDS = 60.0


class DaskWorkerInfo(NamedTuple):
    """What the scheduler says of one Dask worker."""

    address: str
    name: Any
    #: its nanny's address, else its own: what stays the same when a nanny restarts it
    slot: str
    nthreads: int
    host: str
    cpu_percent: float | None
    rss_bytes: int | None


def read_workers(info: dict[str, Any]) -> dict[str, DaskWorkerInfo]:
    """The workers of a scheduler's ``identity`` answer, by address."""
    workers = {}
    for address, entry in info.get("workers", {}).items():
        metrics = entry.get("metrics") or {}
        workers[address] = DaskWorkerInfo(
            address, entry.get("name"), str(entry.get("nanny") or address),
            int(entry.get("nthreads", 0)), str(entry.get("host", "")), metrics.get("cpu"),
            metrics.get("memory"))
    return workers


def local_cluster(options: dict[str, Any]) -> Any:
    """A LocalCluster for one pool: processes with one thread each, no dashboards."""
    import distributed

    settings: dict[str, Any] = {
        "n_workers": 0, "threads_per_worker": 1, "processes": True,
        "dashboard_address": None, "worker_dashboard_address": None}
    settings.update(options)
    # Its health routes still listen: on a free port, so that pools never collide.
    settings["scheduler_kwargs"] = {"dashboard_address": ":0",
                                    **settings.get("scheduler_kwargs", {})}
    return distributed.LocalCluster(**settings)  # type: ignore[no-untyped-call]


def scheduler_helper(client: Any, machine: str) -> dict[str, int]:
    """The scheduler's pid, when it runs on this machine in another process."""
    from procpool.backends.dask_worker import identify

    pid, where = client.run_on_scheduler(identify)
    return {"dask-scheduler": pid} if where == machine and pid != os.getpid() else {}


class SchedulerWatch:
    """A daemon thread that puts ``("workers", {address: DaskWorkerInfo})`` into ``inbox``."""

    def __init__(self, client: Any, put: Callable[[tuple[str, Any]], None],
                 interval: float) -> None:
        self._client = client
        self._put = put
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procpool-dask-watch",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5.0)

    def _read(self) -> dict[str, Any]:
        """Every worker, asked of the scheduler itself. Not ``Client.scheduler_info()``: it
        returns a copy the client's own periodic refresh overwrites, and newer Dask
        refreshes it listing no worker at all, so a read racing that refresh saw every
        worker gone (newer Dask also lists only a few unless asked for all)."""
        identity = self._client.scheduler.identity
        try:
            info: dict[str, Any] = self._client.sync(identity, n_workers=-1)
        except TypeError:  # a Dask from before that argument: it lists them all
            info = self._client.sync(identity)
        return info

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                workers = read_workers(self._read())
                failures = 0
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1
                if failures == 1:
                    logger.warning("cannot read the Dask scheduler's workers: {!r}", exc)
            else:
                self._put(("workers", workers))
            self._stop.wait(self._interval)


class ClusterScaler:
    """Grows and shrinks a cluster object; none (``address=``): does nothing.

    A ``SpecCluster`` (``LocalCluster``, dask-jobqueue, ...) loses exactly the
    named workers; any other cluster with ``scale()`` has them retired through
    the scheduler first, then its target lowered.
    """

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        #: workers asked for that the scheduler has not listed yet
        self.launching = 0
        self._lock: asyncio.Lock | None = None

    @property
    def enabled(self) -> bool:
        return self.cluster is not None

    def grow(self, count: int, known_workers: int) -> None:
        """Ask for ``count`` more Dask workers."""
        if not self.enabled or count <= 0:
            return
        self.launching += count
        logger.debug("dask: scaling up by {} worker(s)", count)
        self._on_loop(self._resize, (), count, known_workers)

    def remove(self, names: list[Any], addresses: list[str], known_workers: int) -> None:
        """Close these Dask workers (their procpool workers have ended)."""
        if self.enabled and names:
            logger.debug("dask: closing worker(s) {}", names)
            self._on_loop(self._resize, (names, addresses), 0, known_workers)

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the cluster's event loop, one call after the other, in call order;
        failures are logged."""
        loop = self.cluster.loop.asyncio_loop

        async def run() -> None:
            if self._lock is None:  # made on the loop, by the first call
                self._lock = asyncio.Lock()
            async with self._lock:
                try:
                    await _maybe_await(fn(*args))
                except Exception as exc:
                    logger.warning("dask: resizing the cluster failed: {!r}", exc)

        asyncio.run_coroutine_threadsafe(run(), loop)

    async def _resize(self, removed: tuple[list[Any], list[str]] | tuple[()], grow: int,
                      known_workers: int) -> None:
        """Close the named workers, and only then grow: a ``SpecCluster`` may give a new
        worker the name of one just closed, and would then keep the old one."""
        cluster = self.cluster
        names, addresses = removed if removed else ([], [])
        if isinstance(getattr(cluster, "worker_spec", None), dict):
            if names:
                await _maybe_await(cluster.scale_down(names))
            if grow:
                await _maybe_await(cluster.scale(len(cluster.worker_spec) + grow))
            return
        if addresses:
            if hasattr(cluster, "scale_down"):
                await _maybe_await(cluster.scale_down(addresses))
            else:
                await cluster.scheduler_comm.retire_workers(workers=addresses,
                                                            close_workers=True)
        await _maybe_await(cluster.scale(max(0, known_workers - len(addresses)) + grow))


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class Op:
    """One Dask task sent to a worker; reported in the order sent."""

    __slots__ = ("future", "kind", "sent_at", "seq", "task_ids")

    def __init__(self, seq: int, kind: str, task_ids: tuple[int, ...], future: Any) -> None:
        self.seq = seq
        self.kind = kind
        self.task_ids = task_ids
        self.future = future
        self.sent_at = monotonic()


class DaskWorker:
    """One procpool worker: the Dask worker it is bound to, and what it was sent."""

    __slots__ = ("address", "created_at", "done", "give_up_at", "kill_at", "killed",
                 "last_done_at", "local", "name", "ops", "pid", "ready", "retiring", "slot",
                 "worker_id")

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.address: str | None = None  # None: waiting for a free Dask worker
        self.name: Any = None
        self.slot = ""
        self.pid: int | None = None
        self.local = False  # its process is on this machine (pid is ours to signal)
        self.ops: deque[Op] = deque()
        self.done: dict[int, tuple[bool, Any, float]] = {}  # seq -> reported out of order
        self.ready = False
        self.retiring = False
        self.killed = False
        self.kill_at: float | None = None  # SIGKILL due (after SIGTERM)
        self.give_up_at: float | None = None  # told to end from afar: reported gone by then
        self.last_done_at = 0.0
        self.created_at = monotonic()


class Placement:
    """Which Dask worker serves which procpool worker, and how many the cluster needs."""

    def __init__(self, scaler: ClusterScaler) -> None:
        self.scaler = scaler
        self.known: dict[str, DaskWorkerInfo] = {}  # the scheduler's latest list
        self.waiting: deque[DaskWorker] = deque()  # starts waiting for a free Dask worker
        self._seen: set[str] = set()
        self._bound: dict[str, DaskWorker] = {}  # Dask worker address -> procpool worker
        self._unusable: set[str] = set()  # killed or lost: never bound again
        #: slots of Dask workers being scaled away (never bound), and when last listed
        self._closing: dict[str, float] = {}
        self._warned_threads = False

    def free_addresses(self) -> list[str]:
        free = []
        for address, info in sorted(self.known.items()):
            if address in self._bound or address in self._unusable or info.slot in self._closing:
                continue
            if info.nthreads != 1:
                if not self._warned_threads:
                    self._warned_threads = True
                    logger.warning("dask: worker {} has {} threads: procpool uses only Dask"
                                   " workers with one (dask worker --nthreads 1)", address,
                                   info.nthreads)
                continue
            free.append(address)
        return free

    def bind_waiting(self) -> list[DaskWorker]:
        """Give free Dask workers to waiting starts, oldest first; those bound now."""
        free = self.free_addresses()
        bound = []
        while self.waiting and free:
            worker = self.waiting.popleft()
            address = free.pop(0)
            worker.address = address
            worker.name = self.known[address].name
            worker.slot = self.known[address].slot
            self._bound[address] = worker
            bound.append(worker)
        return bound

    def balance(self) -> None:
        """Scale up for starts no free Dask worker can take; close surplus idle ones."""
        if not self.scaler.enabled:
            return
        free = self.free_addresses()
        unmet = len(self.waiting) - len(free) - self.scaler.launching
        if unmet > 0:
            self.scaler.grow(unmet, len(self.known))
        elif not self.waiting and free and not self.scaler.launching:
            names = [self.known[a].name for a in free]
            self._unusable.update(free)
            self._closing.update((self.known[a].slot, monotonic()) for a in free)
            self.scaler.remove(names, free, len(self.known))

    def expired(self, now: float, timeout: float) -> list[DaskWorker]:
        """Starts that waited ``timeout`` for a free Dask worker, taken off the line."""
        late = [w for w in self.waiting if now - w.created_at >= timeout]
        for worker in late:
            self.waiting.remove(worker)
        return late

    def figures(self, workers: list[DaskWorker]) -> dict[int, dict[str, Any]]:
        """The scheduler's figures of the workers not on this machine, by worker id."""
        known = self.known
        figures = {}
        for worker in workers:
            info = known.get(worker.address or "")
            if info is not None and not worker.local:
                figures[worker.worker_id] = {"host": info.host, "cpu_percent": info.cpu_percent,
                                             "rss_bytes": info.rss_bytes}
        return figures

    def unusable(self, address: str) -> None:
        self._unusable.add(address)

    def release(self, worker: DaskWorker, lost: bool) -> None:
        """Give back its Dask worker: closed when procpool scales the cluster (the next
        worker gets a fresh process), else free for the next start unless it was lost."""
        address = worker.address
        if address is None or self._bound.pop(address, None) is None:
            return
        if self.scaler.enabled:
            self._unusable.add(address)
            self._closing[worker.slot] = monotonic()
            self.scaler.remove([worker.name], [address], len(self.known))
        elif lost:
            self._unusable.add(address)

    def update(self, workers: dict[str, DaskWorkerInfo]) -> list[DaskWorker]:
        """Take the scheduler's new list; the bound workers missing from it (lost)."""
        self.known = workers
        new = [a for a in workers if a not in self._seen and workers[a].slot not in self._closing]
        self._seen.update(workers)
        if new:
            self.scaler.launching = max(0, self.scaler.launching - len(new))
        lost = [w for address, w in self._bound.items() if address not in workers]
        self._unusable &= set(workers)
        # A slot closing is remembered a while after it left the list: its nanny may
        # restart the worker (a killed one) before it is closed itself.
        now = monotonic()
        for info in workers.values():
            if info.slot in self._closing:
                self._closing[info.slot] = now
        for slot, seen in list(self._closing.items()):
            if now - seen > CLOSING_MEMORY_SECONDS:
                del self._closing[slot]
        return lost

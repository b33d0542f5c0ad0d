"""The Dask backend's view of the cluster: which Dask workers exist, and resizing it.

Supervisor thread only, but for :class:`SchedulerWatch`, whose thread reads the
scheduler's worker list every ``interval`` and hands it over through the
backend's inbox (the scheduler tells no client when a worker joins or leaves).

Resizing follows the burst controller, never Dask's own ``Adaptive``: growth
is ``cluster.scale(n)``; shrinking names the very Dask worker whose procpool
worker has ended (its resource already destroyed), so no busy worker is ever
picked by the cluster's own choice.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from procpool._log import logger


class DaskWorkerInfo(NamedTuple):
    """What the scheduler says of one Dask worker."""

    address: str
    name: Any
    nthreads: int
    host: str
    cpu_percent: float | None
    rss_bytes: int | None


def read_workers(info: dict[str, Any]) -> dict[str, DaskWorkerInfo]:
    """The workers of a ``Client.scheduler_info()`` answer, by address."""
    workers = {}
    for address, entry in info.get("workers", {}).items():
        metrics = entry.get("metrics") or {}
        workers[address] = DaskWorkerInfo(
            address, entry.get("name"), int(entry.get("nthreads", 0)), str(entry.get("host", "")),
            metrics.get("cpu"), metrics.get("memory"))
    return workers


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

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                workers = read_workers(self._client.scheduler_info(n_workers=-1))
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
        """Run ``fn`` on the cluster's event loop, in call order; failures are logged."""
        loop = self.cluster.loop.asyncio_loop

        async def run() -> None:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.warning("dask: resizing the cluster failed: {!r}", exc)

        asyncio.run_coroutine_threadsafe(run(), loop)

    async def _resize(self, removed: tuple[list[Any], list[str]] | tuple[()], grow: int,
                      known_workers: int) -> None:
        cluster = self.cluster
        spec = getattr(cluster, "worker_spec", None)
        names, addresses = removed if removed else ([], [])
        if isinstance(spec, dict):
            for name in names:
                spec.pop(name, None)
            result = cluster.scale(len(spec) + grow)  # also closes the ones popped
        else:
            if addresses:
                if hasattr(cluster, "scale_down"):
                    await _maybe_await(cluster.scale_down(addresses))
                else:
                    await cluster.scheduler_comm.retire_workers(workers=addresses,
                                                                close_workers=True)
            result = cluster.scale(max(0, known_workers - len(addresses)) + grow)
        await _maybe_await(result)


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result

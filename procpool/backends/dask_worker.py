"""What runs inside a Dask worker process for :mod:`procpool.backends.dask`.

The Dask backend sends each procpool worker a short sequence of Dask tasks,
all pinned to one Dask worker with one thread, so they run one at a time and
in the order sent: :func:`identify`, :func:`create`, any number of
:func:`run_batch`, and :func:`destroy`. The resource they share lives in this
module's table, keyed by the backend's token and the procpool worker id, so
several pools (or several workers of one pool, one after the other) can use
the same Dask worker without ever seeing each other's resource.

Every function returns plain data and never raises for what the user's code
does: a task's exception, an unpicklable result or a failing ``on_create``
are outcomes, as on the local backend (:mod:`procpool.backends.wire`).
This module is imported on the Dask workers, so procpool must be installed there.
"""

from __future__ import annotations

import os
import signal
import socket
import traceback
from dataclasses import dataclass, field
from time import monotonic, process_time
from typing import Any

from distributed import WorkerPlugin

from procpool.backends import wire
from procpool.backends.worker import (
    WorkerSpec,
    _rss_reader,
    leave_reason,
    pickle_items,
    run_one,
)

#: Key of one procpool worker's resource: (backend token, worker id).
HeldKey = tuple[str, int]


@dataclass
class _Held:
    spec: WorkerSpec
    resource: Any
    tasks_done: int = 0
    rss: Any = field(default=None)


#: Resources alive in this process. Touched only by the Dask worker's one task
#: thread (and by :class:`DestroyOnClose` after that thread is done).
_HELD: dict[HeldKey, _Held] = {}


class BatchReply:
    """What one :func:`run_batch` reports: the local wire's Results, and whether the
    worker leaves (then ``on_destroy`` already ran, and later batches run nothing)."""

    __slots__ = ("destroy_error", "leaving", "results")

    def __init__(self, results: wire.Results, leaving: str | None,
                 destroy_error: str | None) -> None:
        self.results = results
        self.leaving = leaving
        self.destroy_error = destroy_error

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (BatchReply, (self.results, self.leaving, self.destroy_error))


def machine_id() -> str:
    """Tells this machine (and pid namespace) from another: pids compare only within one."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else
                         open(path).read().strip())  # noqa: SIM115 -- tiny read
        except OSError:
            pass
    return "|".join(parts)


def identify() -> tuple[int, str]:
    """The worker process's pid and machine, before ``on_create`` starts."""
    return os.getpid(), machine_id()


def create(key: HeldKey, spec_bytes: bytes) -> tuple[bool, float | str, str]:
    """Build the resource: ``(True, seconds, "")`` or ``(False, message, traceback)``."""
    started = monotonic()
    try:
        spec: WorkerSpec = wire.loads(spec_bytes)
        resource = spec.on_create()
    except BaseException as exc:  # SystemExit too: a failed create, not a dead worker
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return False, f"on_create raised {type(exc).__qualname__}: {exc}", text
    held = _Held(spec, resource)
    if spec.max_memory:
        held.rss = _rss_reader()
    _HELD[key] = held
    return True, monotonic() - started, ""


def run_batch(key: HeldKey, task_ids: tuple[int, ...], payload: bytes) -> BatchReply:
    """Run the tasks in order with the worker's resource, as the local worker does.

    Stops early when ``check_health`` calls the resource broken or a recycling
    limit is reached: the tasks not run are not reported (the supervisor
    re-queues them), and ``on_destroy`` runs before this returns.
    """
    ids: list[int] = []
    outcomes: list[int] = []
    times: list[tuple[float, float, float, float]] = []  # no wait for a core measured
    items: list[Any] = []
    held = _HELD.get(key)
    if held is None:  # it left after an earlier batch: these tasks are someone else's now
        return BatchReply(wire.Results((), (), (), ()), None, None)
    try:
        tasks = wire.loads(payload)
    except BaseException as exc:
        text = f"{type(exc).__qualname__}: {exc}"
        now = monotonic()
        count = len(task_ids)
        return BatchReply(wire.Results(task_ids, (wire.UNREADABLE_TASK,) * count,
                                       ((now, now, 0.0, 0.0),) * count,
                                       tuple(wire.dumps_fast(text) for _ in task_ids)),
                          None, None)
    spec = held.spec
    leaving = None
    for task_id, (fn, args, kwargs) in zip(task_ids, tasks, strict=True):
        started = monotonic()
        cpu_started = process_time()
        outcome, item, unhealthy = run_one(spec, held.resource, fn, args, kwargs)
        finished = monotonic()
        ids.append(task_id)
        outcomes.append(outcome)
        times.append((started, finished, process_time() - cpu_started, 0.0))
        items.append(item)
        held.tasks_done += 1
        leaving = unhealthy or leave_reason(spec, held.tasks_done, held.rss)
        if leaving is not None:
            break
    del tasks
    pickled = pickle_items(items, outcomes)
    destroy_error = destroy(key) if leaving is not None else None
    return BatchReply(wire.Results(tuple(ids), tuple(outcomes), tuple(times), pickled),
                      leaving, destroy_error)


def destroy(key: HeldKey) -> str | None:
    """Run ``on_destroy`` for the worker's resource, if it has one; the error text, if any."""
    held = _HELD.pop(key, None)
    if held is None or held.spec.on_destroy is None:
        return None
    try:
        held.spec.on_destroy(held.resource)
    except BaseException as exc:
        return f"on_destroy raised {type(exc).__qualname__}: {exc}"
    finally:
        del held
    return None


def destroy_all(token: str) -> None:
    """``on_destroy`` for every resource of the pool ``token`` still alive here."""
    for key in [k for k in _HELD if k[0] == token]:
        destroy(key)


def kill_self() -> None:
    """End this Dask worker process now (terminate a worker from afar).

    Runs on the worker's event loop (``Client.run``), not on its task thread,
    so a task that never returns cannot stop it.
    """
    os.kill(os.getpid(), signal.SIGKILL)


class DestroyOnClose(WorkerPlugin):
    """A Dask worker plugin: a Dask worker closed by someone else (a scale-down procpool
    did not ask for) still runs ``on_destroy`` for this pool's resources on it."""

    name: str

    def __init__(self, token: str) -> None:
        self.token = token
        self.name = f"procpool-{token}"

    def setup(self, worker: Any) -> None:
        """Nothing to build: resources are made by :func:`create`."""

    def teardown(self, worker: Any) -> None:
        destroy_all(self.token)

"""Per-process figures of a pool (CPU, memory, threads), read with psutil.

:class:`StatsDumper` builds what :meth:`procpool.TaskManager.dump_stats`
returns: the pool's :class:`~procpool.Stats` and :class:`~procpool.Metrics`
plus one entry per process, the caller's process (where the supervisor
thread runs) first, then the backend's helpers (the pool's fork server under
the ``forkserver`` start method), then every worker. It is meant to be called often (a
monitoring loop, a live view every 250 ms):

* ``psutil.Process`` objects are kept per worker between calls, because
  ``cpu_percent()`` reports the CPU used *since the previous call on the same
  object* (a fresh object always says 0.0). The first reading of a process is
  therefore 0.0; the next ones cover the time since the previous call.
* Each process is read inside ``Process.oneshot()``, so its ``/proc`` files
  are parsed once per call, not once per figure.

It takes only the supervisor's short snapshot locks and never waits for the
supervisor thread, so the supervisor itself may call it (``Config.stats_dump_path``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
from time import monotonic, time
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from procpool.supervisor import Supervisor

#: Role of the entry that stands for the caller's process, where the supervisor runs.
SUPERVISOR_ROLE = "supervisor"


class StatsDumper:
    """Builds JSON-ready snapshots of one supervisor's pool; safe from any thread."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._started = monotonic()
        self._lock = threading.Lock()  # guards the cached psutil objects
        self._own = psutil.Process()
        # (worker id, pid) -> Process: a recycled pid is never mistaken for an old worker.
        self._workers: dict[tuple[int, int], psutil.Process] = {}
        self._helpers: dict[tuple[str, int], psutil.Process] = {}  # (role, pid) -> Process

    def snapshot(self) -> dict[str, Any]:
        """``{"time", "stats", "metrics", "processes"}``, ready for ``json.dumps``."""
        supervisor = self._supervisor
        stats = supervisor.stats()
        metrics = supervisor.metrics()
        handles = supervisor.worker_handles()
        helpers = supervisor.helper_processes()
        remote = supervisor.worker_figures()  # workers on other machines: not for psutil
        now = monotonic()
        with self._lock:
            processes = [
                _entry(
                    self._own, os.getpid(), SUPERVISOR_ROLE, supervisor.state,
                    metrics.total_tasks_completed, now - self._started, None,
                ),
                *self._helper_entries(helpers),
            ]
            seen = set()
            for handle in sorted(handles, key=lambda h: h.id):
                pid = handle.pid  # None while the worker is still inside on_create
                if handle.id in remote:
                    processes.append(_remote_entry(remote[handle.id], pid, handle.role.value,
                                                   handle.state.value, handle.tasks_done,
                                                   now - handle.created_at, handle.id))
                    continue
                proc = None
                if pid is not None:
                    key = (handle.id, pid)
                    seen.add(key)
                    proc = self._workers.get(key) or _process(pid)
                    if proc is not None:
                        self._workers[key] = proc
                processes.append(_entry(
                    proc, pid, handle.role.value, handle.state.value, handle.tasks_done,
                    now - handle.created_at, handle.id,
                ))
            for key in self._workers.keys() - seen:
                del self._workers[key]
        return {
            "time": time(),
            "stats": _flat_dict(stats),
            "metrics": _flat_dict(metrics),
            "processes": processes,
        }

    def _helper_entries(self, helpers: dict[str, int]) -> list[dict[str, Any]]:
        """Entries of the backend's helper processes; caller holds ``_lock``."""
        entries = []
        for role, pid in sorted(helpers.items()):
            key = (role, pid)
            proc = self._helpers.get(key) or _process(pid)
            uptime = 0.0
            if proc is not None:
                self._helpers[key] = proc
                try:
                    uptime = max(0.0, time() - proc.create_time())
                except psutil.Error:
                    pass
            entries.append(_entry(proc, pid, role, "running", 0, uptime, None))
        for key in self._helpers.keys() - set(helpers.items()):
            del self._helpers[key]
        return entries

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write a snapshot to ``path`` as JSON, atomically (readers never see half a file)."""
        write_json_atomic(path, self.snapshot())


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it over ``path``.

    ``os.replace`` within one folder is atomic on POSIX: a reader sees the
    old file or the new one, never a partial write.
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, separators=(",", ":"), allow_nan=False)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None  # already gone


def _entry(
    proc: psutil.Process | None, pid: int | None, role: str, state: str, tasks_done: int,
    uptime: float, worker_id: int | None,
) -> dict[str, Any]:
    cpu: float | None = None
    rss: int | None = None
    threads: int | None = None
    if proc is not None:
        try:
            with proc.oneshot():
                cpu = proc.cpu_percent()
                rss = proc.memory_info().rss
                threads = proc.num_threads()
        except psutil.Error:
            pass  # exited between the snapshot and this read: figures unknown
    return {
        "pid": pid,
        "worker_id": worker_id,
        "role": role,
        "state": state,
        "cpu_percent": cpu,
        "rss_bytes": rss,
        "num_threads": threads,
        "tasks_done": tasks_done,
        "uptime_seconds": round(uptime, 3),
    }


def _remote_entry(
    figures: dict[str, Any], pid: int | None, role: str, state: str, tasks_done: int,
    uptime: float, worker_id: int,
) -> dict[str, Any]:
    """A worker on another machine: what its backend reports (``host`` added)."""
    entry = _entry(None, pid, role, state, tasks_done, uptime, worker_id)
    entry.update({key: figures.get(key) for key in ("host", "cpu_percent", "rss_bytes")})
    return entry


def _flat_dict(record: Any) -> dict[str, Any]:
    """A dataclass of plain numbers as a dict (``asdict`` is ten times slower: it deep-copies).

    Strict JSON has no NaN or infinity (a user's collector might report them): None.
    """
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in values.items()
    }

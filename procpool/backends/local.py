"""Local backend: one OS process per worker, one duplex pipe each.

Runs on the supervisor thread; :meth:`wake` from any thread, :meth:`send`
and :meth:`collect` from a caller's while :meth:`wait` blocks.

One pipe per worker rather than a shared queue: a worker that dies while
writing can only break its own pipe, never a lock the others need, and the
supervisor knows which tasks went to whom. All pipes, every process sentinel
and a wake-up pipe sit in one ``selectors`` set: the supervisor sleeps in one
blocking call until something happens.

Under the ``forkserver`` start method the workers are forked by the pool's
own fork server (forkserver.py): a worker then has no ``Process`` object and
no sentinel; the server's ``Exited`` report on its control connection (in
the same selector) says when it ended, and its pid is signalled directly.
A constructor running on the process's only thread forks the first workers
itself, as ``fork`` does, and then the server (:meth:`LocalBackend.open`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from time import monotonic
from typing import Any

from procpool.backends import forkserver, local_worker, polling, wire
from procpool.backends.base import (
    Backend,
    Event,
    TaskSpec,
    WorkerCreateFailed,
    WorkerGone,
    WorkerStarted,
)
from procpool.backends.codec import encode_batch
from procpool.backends.forkserver import ForkServerClient
from procpool.backends.local_worker import (
    LocalWorker,
    server_worker,
    single_threaded,
    start_process,
)
from procpool.backends.worker import SpecBox, WorkerSpec, kill_process_group
from procpool.config import Config
from procpool.policy.spin import SpinWindow

#: Role of the fork server in :meth:`LocalBackend.helper_processes` (and in ``dump_stats``).
FORK_SERVER_ROLE = "fork-server"

#: Time between SIGTERM and SIGKILL when a worker is terminated. Longer lets a
#: task's own SIGTERM handler clean up; shorter frees the slot sooner.
TERMINATE_GRACE_SECONDS = 0.2

#: Start requests sent to the fork server and not yet answered: it answers each on
#: the same socket; were requests written without bound while no reply is read, both
#: ends would block in ``send()``. A handful keeps the server busy.
MAX_STARTS_IN_FLIGHT = 8

_WAKE, _CONN, _SENTINEL, _SERVER = 0, 1, 2, 3


class LocalBackend(Backend):
    """Worker processes on this machine: the default backend.

    ``start_method`` (``"fork"``, ``"forkserver"`` or ``"spawn"``) overrides
    ``Config.start_method``; None takes the Config's (or the platform default).
    """

    send_while_waiting = True
    collect_while_waiting = True

    def __init__(self, start_method: str | None = None) -> None:
        self._start_method = start_method or ""
        self._ctx: Any = None
        self._spec = SpecBox(None)
        self._selector = selectors.DefaultSelector()
        self._wake_up = polling.WakeUpPipe()
        self._selector.register(self._wake_up.fd, selectors.EVENT_READ, (_WAKE, None))
        self._workers: dict[int, LocalWorker] = {}
        #: forked by open(), not yet asked for by the supervisor (start_worker)
        self._forked_early: deque[LocalWorker] = deque()
        self._server: ForkServerClient | None = None  # forked in open() or at the first start
        self._server_pid: int | None = None  # for other threads (helper_processes)
        self._pending: list[Event] = []  # events found outside wait(), returned by the next one
        #: forkserver only: worker ids waiting for a free start slot, oldest first
        self._start_backlog: deque[int] = deque()
        self._starts_in_flight = 0
        #: a caller's send() runs beside wait(): no pipe is closed while it writes
        self._conn_lock = threading.Lock()
        #: a caller's collect() runs beside wait(): one reader of a pipe at a time
        #: (reentrant: a read that finds the pipe closed may report the worker gone)
        self._read_lock = threading.RLock()
        #: workers that ended while a caller collected from them, reported next wait()
        self._deferred_exits: list[tuple[LocalWorker, int | None]] = []
        self._collects = 0  # collect() calls that claimed a worker, ever
        self._collect_window = SpinWindow()  # how long collect() polls first
        _live_backends.add(self)

    # -- starting and stopping ---------------------------------------------

    def open(self, config: Config[Any]) -> None:
        """While this is the process's only thread, fork the first workers (which ``fork``
        would fork from a threaded process, ``forkserver`` through its server), then the
        server: no lock can be copied held, and a pool starts in milliseconds. Should a
        fork fail, the supervisor's starts take the usual way and report what fails."""
        self._start_method = self._start_method or config.effective_start_method
        self._ctx = multiprocessing.get_context(self._start_method)
        self._spec = SpecBox(WorkerSpec.of(config))
        if self._start_method not in ("fork", "forkserver") or not single_threaded():
            return
        fork = multiprocessing.get_context("fork")
        with contextlib.suppress(Exception):
            for number in range(1, config.worker_count + config.resource_pool_size + 1):
                self._forked_early.append(start_process(fork, number, self._spec, _lifelines()))
        if self._start_method == "forkserver":
            with contextlib.suppress(Exception):
                self._adopt_server(ForkServerClient(self._spec, list(_lifelines())))

    def start_worker(self, worker_id: int) -> None:
        if self._forked_early:  # the supervisor's first starts: forked in open()
            self._adopt_process(self._forked_early.popleft(), worker_id)
        elif self._start_method == "forkserver":
            self._start_backlog.append(worker_id)
            self._start_waiting()
        else:
            self._start_guarded(self._start_process, worker_id)

    def _start_waiting(self) -> None:
        """Send waiting fork-server starts while fewer than the bound are unanswered."""
        while self._start_backlog and self._starts_in_flight < MAX_STARTS_IN_FLIGHT:
            self._start_guarded(self._start_from_server, self._start_backlog.popleft())

    def _start_guarded(self, start: Callable[[int], None], worker_id: int) -> None:
        try:
            start(worker_id)
        except Exception as exc:  # e.g. EMFILE: one failed start, not a broken pool
            reason = f"could not start the worker process: {type(exc).__qualname__}: {exc}"
            self._pending += [WorkerCreateFailed(worker_id, reason, ""),
                              WorkerGone(worker_id, None, None, None)]

    def _start_process(self, worker_id: int) -> None:
        self._adopt_process(start_process(self._ctx, worker_id, self._spec, _lifelines()),
                            worker_id)

    def _adopt_process(self, worker: LocalWorker, worker_id: int) -> None:
        """A started process becomes worker ``worker_id`` (one forked in :meth:`open`
        is named after its place among the first: the supervisor numbers them from 1)."""
        assert worker.conn is not None and worker.pid is not None and worker.exit_fd is not None
        worker.worker_id = worker_id
        self._workers[worker_id] = worker
        self._selector.register(worker.conn, selectors.EVENT_READ, (_CONN, worker))
        self._selector.register(worker.exit_fd, selectors.EVENT_READ, (_SENTINEL, worker))
        self._pending.append(WorkerStarted(worker_id, worker.pid))

    def _start_from_server(self, worker_id: int) -> None:
        """Ask the fork server for the worker; its pid (or failure) comes back in wait()."""
        worker = server_worker(self._ctx, worker_id)
        assert worker.conn is not None
        self._workers[worker_id] = worker
        self._selector.register(worker.conn, selectors.EVENT_READ, (_CONN, worker))
        reason = "the fork server is gone"
        for _ in range(2):  # a server found dead on sending is replaced once
            try:
                server = self._running_server()
            except Exception as exc:
                reason = f"the fork server could not start: {type(exc).__qualname__}: {exc}"
                break
            if server.request_start(worker_id, worker.held_fds):
                worker.server = server
                self._starts_in_flight += 1
                return
            self._on_server_gone(server, self._pending)
        self._on_start_failed(worker, reason, self._pending)

    def _running_server(self) -> ForkServerClient:
        if self._server is None:
            self._adopt_server(ForkServerClient(self._spec))
        assert self._server is not None
        return self._server

    def _adopt_server(self, server: ForkServerClient) -> None:
        self._selector.register(server.conn, selectors.EVENT_READ, (_SERVER, server))
        self._server = server
        self._server_pid = server.pid

    def retire(self, worker_id: int) -> None:
        worker = self._started(worker_id)
        if worker is not None:
            worker.send(wire.Leave())

    def terminate(self, worker_id: int, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        worker = self._started(worker_id)
        if worker is None or (worker.process is not None and worker.process.exitcode is not None):
            return
        if grace <= 0:
            worker.signal(signal.SIGKILL)
            worker.kill_at = None
            return
        worker.signal(signal.SIGTERM)
        if worker.kill_at is None:
            worker.kill_at = monotonic() + grace

    def _started(self, worker_id: int) -> LocalWorker | None:
        """The worker's record; without one, a start still waiting for a slot is
        dropped: it ends before it began."""
        worker = self._workers.get(worker_id)
        if worker is None and worker_id in self._start_backlog:
            self._start_backlog.remove(worker_id)
            self._pending.append(WorkerGone(worker_id, None, None, None))
        return worker

    def _lifeline_fds(self) -> list[int]:
        """This process's ends of the connections whose close tells a child that its
        supervisor is gone. Any thread may call it (a fork start in another pool)."""
        server = self._server
        workers = list(self._workers.values()) + list(self._forked_early)
        return local_worker.fds_of([w.conn for w in workers]
                                   + ([server.conn] if server is not None else []))

    def close(self) -> None:
        _live_backends.discard(self)
        self._start_backlog.clear()
        for number, worker in enumerate(self._forked_early, 1):  # never asked for
            worker.worker_id = -number
            self._workers[-number] = worker
        self._forked_early.clear()
        for worker in self._workers.values():
            if worker.process is None or not kill_process_group(worker.pid):
                worker.signal(signal.SIGKILL)
        for worker in list(self._workers.values()):
            if worker.process is not None:
                worker.process.join()
        if self._server is not None:
            self._selector.unregister(self._server.conn)
            self._server.stop()  # it kills and reaps the workers whose pid we never heard
            self._server = self._server_pid = None
        for worker in list(self._workers.values()):
            self._forget(worker)
        self._selector.close()
        self._wake_up.close()

    # -- work ----------------------------------------------------------------

    def send(self, worker_id: int, tasks: Sequence[TaskSpec]) -> list[tuple[int, BaseException]]:
        payload, tasks, rejected = encode_batch(tasks)
        if tasks:
            message = wire.RunBatch(tuple(t.task_id for t in tasks), payload)
            with self._conn_lock:
                worker = self._workers.get(worker_id)
                if worker is not None:  # else wait() found it gone: its tasks are freed
                    worker.reads_since_send = 0  # before the write: a reply counts after it
                    worker.send(message)
        return rejected

    def collect(self, worker_id: int, timeout: float) -> list[Event] | None:
        worker = self._workers.get(worker_id)
        with self._read_lock:
            if worker is None or worker.conn is None or worker.collected or worker.reads_since_send:
                return None
            worker.collected = True
            self._collects += 1
            fd = worker.conn.fileno()
            # Meanwhile wait() does not watch the pipe: one thread woken per message.
            self._selector.unregister(worker.conn)
        events: list[Event] = []
        try:
            if polling.readable_within(fd, timeout, self._collect_window):
                with self._read_lock:
                    if worker.conn is not None:
                        self._read_one(worker, events)
        finally:
            with self._read_lock:
                if worker.conn is not None:
                    self._selector.register(worker.conn, selectors.EVENT_READ, (_CONN, worker))
                worker.collected = False
        return events

    def running_task(self, worker_id: int) -> tuple[int, float] | None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return None
        task_id = int(worker.progress[0])
        return (task_id, worker.progress[1]) if task_id else None

    def pid(self, worker_id: int) -> int | None:
        worker = self._workers.get(worker_id)
        return worker.pid if worker else None

    def processes(self) -> dict[int, int]:
        """``worker_id -> pid`` of every process this backend started and has not reaped."""
        return {wid: w.pid for wid, w in self._workers.items() if w.pid is not None}

    def helper_processes(self) -> dict[str, int]:
        pid = self._server_pid  # one read: safe from any thread
        return {} if pid is None else {FORK_SERVER_ROLE: pid}

    # -- events --------------------------------------------------------------

    def wake(self) -> None:
        self._wake_up.wake()

    def wait(self, timeout: float | None) -> list[Event]:
        events, self._pending = self._pending, []
        deferred, self._deferred_exits = self._deferred_exits, []
        for worker, exitcode in deferred:
            self._on_exit(worker, exitcode, events)
        if events or self._deferred_exits:  # one still collected: back soon to report it
            timeout = 0.0
        kill_due = [w.kill_at for w in self._workers.values() if w.kill_at is not None]
        if kill_due:
            until_kill = max(0.0, min(kill_due) - monotonic())
            timeout = until_kill if timeout is None else min(timeout, until_kill)
        collects = self._collects
        for key, _ in self._selector.select(timeout):
            kind, source = key.data
            if kind == _WAKE:
                self._wake_up.drain()
            elif kind == _CONN:
                # A caller that collected since select() may have read what it saw:
                # then only a message still there is read (one poll more, only then).
                with self._read_lock:
                    if source.worker_id in self._workers and not source.collected \
                            and (self._collects == collects or source.has_data()):
                        self._read_one(source, events)
            elif kind == _SERVER:
                if source.alive:
                    self._read_server(source, events)
            elif source.worker_id in self._workers:
                self._on_exit(source, None, events)  # its exit code is read once reaped
        if kill_due:
            now = monotonic()
            for worker in self._workers.values():
                if worker.kill_at is not None and worker.kill_at <= now:
                    worker.signal(signal.SIGKILL)
                    worker.kill_at = None
        self._start_waiting()
        events += self._pending
        self._pending = []
        return events

    def _on_exit(self, worker: LocalWorker, exitcode: int | None, events: list[Event]) -> None:
        """The process ended: take every message it left in the pipe, then report."""
        with self._read_lock:
            if worker.collected:  # a caller reads its pipe now: the next wait() reports it
                self._deferred_exits.append((worker, exitcode))
                return
            if self._workers.pop(worker.worker_id, None) is None:
                return  # already reported (reached again while draining its pipe)
            while worker.has_data():
                self._read_one(worker, events)
        if worker.process is not None:
            kill_process_group(worker.pid)  # exited, not reaped: its pid is still its own
            worker.process.join(timeout=1.0)
            exitcode = worker.process.exitcode
        task_id = int(worker.progress[0])
        events.append(WorkerGone(worker.worker_id, exitcode, task_id or None, worker.destroy_error))
        self._forget(worker)

    def _read_server(self, server: ForkServerClient, events: list[Event]) -> None:
        reply = server.receive()
        if reply is None:
            self._on_server_gone(server, events)
            return
        if isinstance(reply, forkserver.Exited):
            for worker in list(self._workers.values()):
                if worker.server is server and worker.pid == reply.pid:
                    self._on_exit(worker, reply.returncode, events)
            return
        self._starts_in_flight -= 1
        starting = self._workers.get(reply.worker_id)
        if starting is None or starting.server is not server:
            return
        if isinstance(reply, forkserver.Started):
            starting.release_held_fds()
            starting.set_pid(reply.pid)
            events.append(WorkerStarted(starting.worker_id, reply.pid))
        else:
            self._on_start_failed(starting, reply.reason, events)

    def _on_server_gone(self, server: ForkServerClient, events: list[Event]) -> None:
        """The server died. Its workers live on (each has its own lifeline), but no exit
        report will come: their pipe closing tells their end from now on."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(server.conn)
        server.discard()
        if self._server is server:
            self._server = self._server_pid = None
            self._starts_in_flight = 0  # nothing more will be answered
        for worker in list(self._workers.values()):
            if worker.server is not server:
                continue
            # A start it never answered: a forked worker still says Ready (with its pid)
            # on its pipe; else dropping our copy of its pipe end reports it gone.
            worker.release_held_fds()
            if worker.conn is None:
                self._on_exit(worker, None, events)

    def _on_start_failed(self, worker: LocalWorker, reason: str, events: list[Event]) -> None:
        message = f"could not start the worker process: {reason}"
        events.append(WorkerCreateFailed(worker.worker_id, message, ""))
        self._on_exit(worker, None, events)

    def _forget(self, worker: LocalWorker) -> None:
        self._workers.pop(worker.worker_id, None)
        self._close_conn(worker)
        worker.release_held_fds()
        process = worker.process
        if process is None:
            return
        if worker.exit_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.exit_fd)
            if worker.exit_fd != process.sentinel:
                os.close(worker.exit_fd)
            worker.exit_fd = None
        try:
            process.close()
        except ValueError:
            pass  # still running: only after kill() without join

    def _close_conn(self, worker: LocalWorker) -> None:
        if worker.conn is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.conn)
        with self._conn_lock:
            worker.conn.close()
            worker.conn = None

    def _read_one(self, worker: LocalWorker, events: list[Event]) -> None:
        """Read the worker's pipe once: every whole message there (at least one)."""
        try:
            events += worker.read_events()
        except (EOFError, OSError):
            self._close_conn(worker)
            # The sentinel or the server's exit report tells the end, once the process
            # is gone; a worker whose server died has nobody to tell: this is its end.
            if worker.server is not None and not worker.server.alive:
                self._on_exit(worker, None, events)


#: Local backends not yet closed, for the fds a ``fork`` child must drop.
_live_backends: weakref.WeakSet[LocalBackend] = weakref.WeakSet()


def _lifelines() -> Iterator[int]:
    """This process's ends of every worker's pipe, in every pool: a forked child must
    drop them all, or that worker never sees its pipe close when its supervisor dies
    (see worker.py)."""
    return (fd for backend in list(_live_backends) for fd in backend._lifeline_fds())

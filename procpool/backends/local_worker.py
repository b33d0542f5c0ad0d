"""The local backend's record of one worker process, how one is started, and what can
be done to it alone.

Supervisor thread only (it belongs to :class:`~procpool.backends.local.LocalBackend`).
A worker is either a ``process`` of its own (``fork``, ``spawn``) or a child
of the pool's fork ``server`` (``forkserver``), which has no ``Process``
object: it is signalled by pid, and its exit comes in the server's reports.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from procpool.backends import wire
from procpool.backends.base import (
    Event,
    WorkerCreateFailed,
    WorkerLeaving,
    WorkerReady,
    WorkerResults,
)
from procpool.backends.codec import decode_results
from procpool.backends.forkserver import new_progress
from procpool.backends.worker import SpecBox, worker_main

if TYPE_CHECKING:
    from procpool.backends.forkserver import ForkServerClient


class LocalWorker:
    """One worker: its pipe, its progress slots, and how to signal it."""

    __slots__ = (
        "collected", "conn", "destroy_error", "exit_fd", "held_fds", "kill_at",
        "pending_signal", "pid", "process", "progress", "reader", "reads_since_send",
        "server", "worker_id",
    )

    def __init__(self, worker_id: int, conn: Connection, progress: Any) -> None:
        self.worker_id = worker_id
        self.conn: Connection | None = conn
        #: reads the pipe: every message there in one system call
        self.reader = wire.MessageReader(conn.fileno())
        self.progress = progress
        self.process: BaseProcess | None = None
        #: readable once ``process`` exited: a pidfd where the OS has them, else its sentinel
        self.exit_fd: int | None = None
        self.server: ForkServerClient | None = None
        #: fds sent to the server, closed once it answered (or died)
        self.held_fds: list[int] = []
        #: a signal asked for before the pid was known
        self.pending_signal: int | None = None
        self.pid: int | None = None
        self.destroy_error: str | None = None
        self.kill_at: float | None = None
        #: messages read since the latest send (see LocalBackend.collect)
        self.reads_since_send = 0
        #: a caller's thread reads this worker's messages (LocalBackend.collect)
        self.collected = False

    def set_pid(self, pid: int) -> None:
        """The pid is known now: deliver a signal asked for before."""
        self.pid = pid
        if self.pending_signal is not None:
            self.signal(self.pending_signal)
            self.pending_signal = None

    def signal(self, signum: int) -> None:
        if self.process is not None:
            if signum == signal.SIGKILL:
                self.process.kill()
            else:
                self.process.terminate()
            return
        if self.pid is None:  # the server has yet to say it forked it
            if self.pending_signal != signal.SIGKILL:
                self.pending_signal = signum
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass  # already gone; its exit is reported

    def send(self, message: Any) -> None:
        if self.conn is None:
            return
        try:
            wire.send_message(self.conn, wire.dumps_fast(message))
        except OSError:
            pass  # it died: its end is reported (exit fd, exit report), its tasks re-queued then

    def read_events(self) -> list[Event]:
        """Read what the pipe holds (it blocks until a whole message is there) and say
        what each message means, in order.

        Raises EOFError or OSError once the pipe is closed or broken.
        """
        assert self.conn is not None
        messages = self.reader.read()
        self.reads_since_send += len(messages)
        events = []
        for data in messages:
            event = self._event(wire.loads(data))
            if event is not None:
                events.append(event)
        return events

    def _event(self, message: Any) -> Event | None:
        wid = self.worker_id
        kind = type(message)
        if kind is wire.Results:
            return WorkerResults(wid, decode_results(message))
        if kind is wire.Ready:
            if self.pid is None:
                self.set_pid(message.pid)
            return WorkerReady(wid, message.pid, message.create_seconds)
        if kind is wire.Leaving:
            return WorkerLeaving(wid, message.reason)
        if kind is wire.Goodbye:
            self.destroy_error = message.destroy_error
        elif kind is wire.CreateFailed:
            return WorkerCreateFailed(wid, message.message, message.traceback_text)
        return None

    def has_data(self) -> bool:
        try:
            return self.conn is not None and self.conn.poll(0)
        except (OSError, EOFError):
            return False

    def release_held_fds(self) -> None:
        for fd in self.held_fds:
            os.close(fd)
        self.held_fds = []


def start_process(
    ctx: Any, worker_id: int, spec: SpecBox, lifelines: Iterable[int]
) -> LocalWorker:
    """Start a ``fork`` or ``spawn`` worker process with a duplex pipe of its own.

    ``lifelines``: this process's ends of other workers' pipes, which a
    ``fork`` child must close (only the generator's consumption is paid).
    """
    forked = ctx.get_start_method() == "fork"
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    try:
        # A fork child inherits a shared mapping as it is (what the fork server's
        # workers use: no multiprocessing heap to import and set up, ~1.5 ms);
        # spawn must pickle its slots, which RawArray can.
        if forked:
            fd, progress = new_progress()
            os.close(fd)  # the mapping stays
        else:
            progress = ctx.RawArray("d", 2)
    except BaseException:
        parent_conn.close()
        child_conn.close()
        raise
    close_fds: tuple[int, ...] = ()
    if forked:
        close_fds = (parent_conn.fileno(), *lifelines)
    process = ctx.Process(
        target=worker_main,
        args=(child_conn, spec, progress, close_fds),
        name=f"procpool-worker-{worker_id}",
    )
    if close_fds:
        wire.remember_main_classes()
    try:
        process.start()
    except BaseException:
        parent_conn.close()
        raise
    finally:
        child_conn.close()
    worker = LocalWorker(worker_id, parent_conn, progress)
    worker.process = process
    worker.pid = process.pid
    worker.exit_fd = exit_fd(process)
    return worker


def server_worker(ctx: Any, worker_id: int) -> LocalWorker:
    """The record of a worker the fork server is to fork: its pipe, its progress slots,
    and in ``held_fds`` the worker's ends of both, to send to the server. What fails
    here (EMFILE) leaves no fd open."""
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    try:
        held = os.dup(child_conn.fileno())
        try:
            progress_fd, progress = new_progress()
        except BaseException:
            os.close(held)
            raise
    except BaseException:
        parent_conn.close()
        raise
    finally:
        child_conn.close()
    worker = LocalWorker(worker_id, parent_conn, progress)
    worker.held_fds = [held, progress_fd]
    return worker


def exit_fd(process: BaseProcess) -> int:
    """An fd that becomes readable when ``process`` exits.

    A pidfd (Linux 5.3+) where there is one: multiprocessing's sentinel is a
    pipe that the worker's own children inherit (a task's ``os.fork()``), and
    it would not close while they live; a pidfd reports the worker's exit alone.
    """
    try:
        return os.pidfd_open(process.pid)  # type: ignore[arg-type]
    except (AttributeError, OSError):
        return process.sentinel


def fds_of(conns: Iterable[Connection | None]) -> list[int]:
    """The fds of the connections still open (another thread may close one meanwhile)."""
    fds = []
    for conn in conns:
        try:
            if conn is not None:
                fds.append(conn.fileno())
        except OSError:
            pass  # closed meanwhile by its own supervisor thread
    return fds


def single_threaded() -> bool:
    """True when this process runs one thread (Linux: every OS thread counts, C ones too).

    Only then is ``os.fork()`` safe: no other thread can hold a lock (of
    ``logging``, ``malloc``, a C library's) that the child would inherit held.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False

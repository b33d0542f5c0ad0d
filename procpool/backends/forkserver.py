"""procpool's own fork server: one per pool, under the ``forkserver`` start method.

Why it exists: every child of multiprocessing's forkserver imports the
caller's main module and procpool's worker code again (CPython 3.11's
forkserver does not preload ``__main__`` in practice), ~0.1 s per worker. This
server is started once per pool the standard way (a multiprocessing
``forkserver`` Process, so it imports the main module once), unpickles the
pool's :class:`~procpool.backends.worker.WorkerSpec` once (importing the
module of ``on_create``), then ``os.fork()`` s each worker from that warm,
single-threaded state: a few ms per worker.

The control connection is a Unix socket pair (``Pipe(duplex=True)``)::

    supervisor -> server   StartWorker + the worker's two fds (SCM_RIGHTS), Stop
    server -> supervisor   Started, StartFailed, Exited (the server reaps its workers)

Both ends of this module live here: :class:`ForkServerClient` runs in the
caller's process (on the supervisor thread), :func:`server_main` is the
server. The server never stops workers when its supervisor disappears: each
worker has its own lifeline (worker.py) and leaves by itself.
"""

from __future__ import annotations

import array
import atexit
import ctypes
import mmap
import multiprocessing
import multiprocessing.util
import os
import selectors
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, NamedTuple, NoReturn

from procpool.backends import wire
from procpool.backends.polling import WakeUpPipe
from procpool.backends.worker import SpecBox, kill_process_group, worker_main

#: Name of the server process (as multiprocessing knows it).
SERVER_NAME = "procpool-fork-server"

#: How long ``stop()`` waits for the server to kill and reap its workers and
#: exit before killing it. Longer tolerates a slow, loaded machine; shorter
#: bounds how long closing a pool can take.
STOP_SECONDS = 5.0

#: How long the supervisor waits for a server whose control connection closed
#: (it died or is exiting) before killing it.
DEAD_JOIN_SECONDS = 1.0

#: File descriptors sent with each start request: the worker's pipe end, its progress slots.
FDS_PER_WORKER = 2

_ProgressSlots = ctypes.c_double * 2


# -- messages -----------------------------------------------------------------


class StartWorker(NamedTuple):
    """Fork worker ``worker_id``; its fds follow on the socket."""

    worker_id: int


class Stop(NamedTuple):
    """The pool closes: kill and reap every worker, then exit."""


class Started(NamedTuple):
    worker_id: int
    pid: int


class StartFailed(NamedTuple):
    worker_id: int
    reason: str


class Exited(NamedTuple):
    """A worker was reaped; ``returncode`` as multiprocessing gives it (-N: signal N)."""

    pid: int
    returncode: int


Reply = Started | StartFailed | Exited


# -- progress slots -----------------------------------------------------------


def new_progress() -> tuple[int, Any]:
    """``(fd, slots)``: a worker's two progress slots in memory another process can map.

    ``RawArray`` can only be inherited by a child of this process; the fd of
    this mapping can be passed to the server, which is not one.
    """
    fd = _anonymous_file()
    try:
        os.ftruncate(fd, ctypes.sizeof(_ProgressSlots))
        return fd, _map_slots(fd)
    except BaseException:
        os.close(fd)
        raise


def open_progress(fd: int) -> Any:
    """The slots behind a passed fd (the fd is closed: the mapping keeps the memory)."""
    try:
        return _map_slots(fd)
    finally:
        os.close(fd)


def _anonymous_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("procpool-progress", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="procpool-progress-")  # e.g. macOS: no memfd
    os.unlink(path)
    return fd


def _map_slots(fd: int) -> Any:
    # The ctypes array keeps the mmap alive, and the mapping is freed with it.
    return _ProgressSlots.from_buffer(mmap.mmap(fd, ctypes.sizeof(_ProgressSlots)))


# -- passing fds ----------------------------------------------------------------
# Our own SCM_RIGHTS helpers rather than multiprocessing.reduction's: on macOS
# those wait for an acknowledgement byte on the same socket, which would mix
# with the server's replies.


def send_fds(sock: socket.socket, fds: Sequence[int]) -> None:
    """Send ``fds`` as one byte of data carrying them."""
    sock.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def recv_fds(sock: socket.socket, count: int) -> list[int]:
    """Receive what :func:`send_fds` sent; EOFError if the peer closed first."""
    fds = array.array("i")
    data, ancillary, flags, _ = sock.recvmsg(1, socket.CMSG_SPACE(count * fds.itemsize))
    if not data:
        raise EOFError("control connection closed")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    if len(received) != count or flags & socket.MSG_CTRUNC:
        for fd in received:
            os.close(fd)
        raise OSError(f"expected {count} file descriptors, received {len(received)}")
    return received


# -- client side (caller's process) ---------------------------------------------


class ForkServerClient:
    """One running server and its control connection, seen from the supervisor."""

    def __init__(self, spec: SpecBox, lifelines: Sequence[int] | None = None) -> None:
        """``lifelines``: fork the server from this process, which must have a single
        thread (~100x faster than multiprocessing's forkserver, and as safe: no
        other thread can hold a lock the child would inherit); the server closes
        these fds, its copies of other workers' lifelines. None: start it through
        multiprocessing's forkserver."""
        ctx: Any = multiprocessing.get_context("forkserver" if lifelines is None else "fork")
        self.conn, server_end = ctx.Pipe(duplex=True)
        self._sock = socket.fromfd(self.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        # A forked server must not keep this end open (nor its socket's copy): it would
        # never see the connection close when this process dies.
        close_fds = () if lifelines is None else (
            self.conn.fileno(), self._sock.fileno(), *lifelines)
        if lifelines is not None:
            wire.remember_main_classes()
        self._process: BaseProcess = ctx.Process(
            target=server_main, args=(server_end, spec, close_fds), name=SERVER_NAME
        )
        try:
            self._process.start()
        except BaseException:
            self._close_conn()
            raise
        finally:
            server_end.close()
        #: False once the control connection failed: no reply will come any more.
        self.alive = True

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def request_start(self, worker_id: int, fds: Sequence[int]) -> bool:
        """Ask for a worker; False if the server is gone. The reply comes in :meth:`receive`."""
        try:
            self.conn.send(StartWorker(worker_id))
            send_fds(self._sock, fds)
        except (OSError, ValueError):
            self.alive = False
            return False
        return True

    def receive(self) -> Reply | None:
        """The next reply (the connection is readable); None when the server is gone."""
        try:
            reply: Reply = self.conn.recv()
        except (EOFError, OSError):
            self.alive = False
            return None
        return reply

    def stop(self) -> None:
        """Have the server kill and reap its workers and exit; kill it if it takes too long."""
        if self.alive:
            try:
                self.conn.send(Stop())
            except (OSError, ValueError):
                pass
        self.alive = False
        self._close_conn()
        self._join(STOP_SECONDS)

    def discard(self) -> None:
        """Release a server whose connection closed (it died or is exiting)."""
        self.alive = False
        self._close_conn()
        self._join(DEAD_JOIN_SECONDS)

    def _join(self, timeout: float) -> None:
        process = self._process
        try:
            process.join(timeout)
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()
        except ValueError:
            pass  # already closed

    def _close_conn(self) -> None:
        self._sock.close()
        self.conn.close()


# -- server side ------------------------------------------------------------------


def server_main(conn: Connection, spec: SpecBox, close_fds: Sequence[int] = ()) -> None:
    """Entry point of the server process (the ``target`` of its Process)."""
    for fd in close_fds:  # a forked server's copies of the supervisor's lifelines
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the caller's process decides
    try:
        spec.open()  # imports the modules of on_create & co, once for all workers
    except BaseException:
        pass  # each worker loads the spec again and reports the error as a failed on_create
    server = _Server(conn, spec)
    try:
        server.run()
    finally:
        server.close()


def _on_sigchld(signum: int, frame: FrameType | None) -> None:
    """Nothing: the wake-up fd already woke the loop, which reaps."""


class _Server:
    """The server's state and single-threaded loop."""

    def __init__(self, conn: Connection, spec: SpecBox) -> None:
        self.conn = conn
        self.spec = spec
        self.sock = socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        self.children: set[int] = set()
        self.open = True  # False: stop serving (told to stop, or the supervisor is gone)
        self.muted = False  # True: replies cannot be sent any more
        self.wake_up = WakeUpPipe()  # written by the signal machinery (SIGCHLD)
        self.selector = selectors.DefaultSelector()
        self.selector.register(conn, selectors.EVENT_READ)
        self.selector.register(self.wake_up.fd, selectors.EVENT_READ)
        signal.set_wakeup_fd(self.wake_up.write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _on_sigchld)

    def run(self) -> None:
        """Serve requests and reap workers until the supervisor closes or says stop."""
        while self.open:
            for key, _ in self.selector.select():
                if key.fileobj is self.conn:
                    self._serve_request()
                else:
                    self.wake_up.drain()
            self._reap()

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.selector.close()
        self.sock.close()
        self.conn.close()
        self.wake_up.close()

    def _serve_request(self) -> None:
        try:
            request = self.conn.recv()
            if type(request) is Stop:
                self._kill_children()
                self.open = False
                return
            fds = recv_fds(self.sock, FDS_PER_WORKER)
        except (EOFError, OSError):
            self.open = False  # the supervisor is gone: its workers leave on their own
            return
        self._fork_worker(request.worker_id, fds)

    def _fork_worker(self, worker_id: int, fds: list[int]) -> None:
        conn_fd, progress_fd = fds
        try:
            process = multiprocessing.get_context("forkserver").Process(
                target=_worker_entry,
                args=(conn_fd, progress_fd, self.spec),
                name=f"procpool-worker-{worker_id}",
            )
            _flush_std_streams()
            pid = os.fork()
        except Exception as exc:
            _close_all(fds)
            self._reply(StartFailed(worker_id, f"{type(exc).__qualname__}: {exc}"))
            return
        if pid == 0:
            self._become_worker(process)
        # Only the worker may hold its pipe end: its exit must close the pipe.
        _close_all(fds)
        self.children.add(pid)
        self._reply(Started(worker_id, pid))

    def _become_worker(self, process: BaseProcess) -> NoReturn:
        """In the forked child: drop the server's state, then run the worker."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.selector.close()
            self.sock.close()
            self.conn.close()
            self.wake_up.close()
            # multiprocessing's own child start-up and exit (current_process(), after-fork
            # hooks, finalizers, flushing stdout/stderr): a worker behaves as one it started.
            # As its popen_fork does: exit handlers of the worker's own, then run at its end
            # (since 3.12 the finalizers that flush a multiprocessing queue run only there).
            atexit._clear()
            atexit.register(multiprocessing.util._exit_function)  # type: ignore[attr-defined]
            code = process._bootstrap()  # type: ignore[attr-defined]
        finally:
            try:
                atexit._run_exitfuncs()
            finally:
                os._exit(code)

    def _reap(self) -> None:
        while (pid := _exited_child()) is not None:
            kill_process_group(pid)  # what its tasks started goes with it
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            self.children.discard(pid)
            self._reply(Exited(pid, os.waitstatus_to_exitcode(status)))

    def _kill_children(self) -> None:
        for pid in self.children:
            if not kill_process_group(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self.children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()

    def _reply(self, reply: Reply) -> None:
        if self.muted:
            return
        try:
            self.conn.send(reply)
        except (OSError, ValueError):
            # The supervisor closed its end. Keep serving: a Stop it sent first is still
            # to be read (reads see it before the end of the stream), and must be obeyed.
            self.muted = True


def _exited_child() -> int | None:
    """The pid of a child that exited, left unreaped (so its pid and group are still its
    own); None when no child has exited."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return None if info is None else info.si_pid


def _worker_entry(conn_fd: int, progress_fd: int, spec: SpecBox) -> None:
    """The worker's target: wrap the fds it was passed, then the usual worker loop."""
    os.set_inheritable(conn_fd, False)  # as received it would be inherited by exec'd programs
    worker_main(Connection(conn_fd), spec, open_progress(progress_fd))


def _flush_std_streams() -> None:
    """Flush before forking: text buffered here (a module printing at import) would
    otherwise be written again by every worker."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

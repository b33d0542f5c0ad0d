"""The worker process: build one resource, run many tasks with it, leave.

Everything here runs *in the worker process*. The loop is deliberately
plain: receive a batch, run its tasks in order, send results back in
batches, and leave on the sentinel, on an unhealthy error or when recycled.

Each worker leads a process group of its own, so that what its tasks start
(``subprocess.Popen``, ``os.fork``) can be killed with it: whoever sees the
worker end kills that group (:func:`kill_process_group`) before the worker's
pid can be reused. A process a task starts in a session of its own
(``start_new_session=True``) is not in the group, and is left alone.

Two things make crashes explainable to the supervisor:

* a shared two-slot array (``progress``) holds the id and start time of the
  running task, so after a crash the supervisor knows which task was running
  (and when a timed task started) without a message per task;
* results are flushed before the worker blocks, and at least every
  :data:`FLUSH_SECONDS` while it is busy, so little is ever unsent.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import monotonic, process_time
from typing import Any

from procpool.backends import polling, wire
from procpool.policy.spin import MOST_BETWEEN_CHUNKS_SECONDS, SpinWindow
from procpool.tasks import ChunkFailed, MapChunk

#: Longest a finished result waits in the worker before it is sent while the
#: worker is still busy with its batch. Longer batches fewer results per
#: message (cheaper); shorter lets the supervisor refill the worker sooner and
#: bounds what a crash can take with it.
FLUSH_SECONDS = 0.0005

#: After the supervisor disappears, how long an idle worker may spend in
#: ``on_destroy`` before the process ends anyway.
ORPHAN_GRACE_SECONDS = 1.0

#: Exit code of a worker that left because its supervisor died.
EXIT_ORPHANED = 70


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to know, sent once (cloudpickled) at start."""

    on_create: Callable[[], Any]
    on_destroy: Callable[[Any], None] | None
    check_health: Callable[[BaseException], bool] | None
    max_tasks: int | None
    max_memory: int | None

    @classmethod
    def of(cls, config: Any) -> WorkerSpec:
        """The part of a :class:`~procpool.Config` that workers need."""
        return cls(config.on_create, config.on_destroy, config.check_health,
                   config.max_tasks_per_worker, config.max_memory_per_worker)


class SpecBox:
    """A :class:`WorkerSpec` on its way to a worker process, opened inside the worker.

    It is cloudpickled (so lambdas and closures travel) *while multiprocessing
    starts the process*: objects that may only be handed over at a process's
    start, such as a ``multiprocessing.Queue`` among ``on_create``'s arguments,
    travel too. It is unpickled only by :meth:`open`, inside the worker's own
    error handling, so a spec that cannot be loaded there (a module missing)
    is reported as a failed ``on_create`` with its traceback. Under ``fork``
    nothing is pickled: :meth:`open` returns the spec itself.
    """

    def __init__(self, spec: WorkerSpec | None, data: bytes = b"") -> None:
        self._spec = spec
        self._data = data

    def __reduce__(self) -> tuple[Any, tuple[None, bytes]]:
        return (SpecBox, (None, wire.dumps_for_child(self._spec) if self._spec else self._data))

    def open(self) -> WorkerSpec:
        if self._spec is None:
            self._spec = wire.loads(self._data)
        return self._spec


def _watch_supervisor(conn: Connection, exiting: threading.Event) -> None:
    """Leave when the supervisor's end of the pipe closes (it died).

    Runs on a daemon thread, so even a worker deep inside a long task notices.
    ``POLLRDHUP`` reports the peer's close without consuming data.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLRDHUP)
    while True:
        events = poller.poll()
        gone = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
        if any(mask & gone for _, mask in events):  # NVAL: a task closed the pipe's fd
            break
    exiting.wait(ORPHAN_GRACE_SECONDS)
    # Nobody is left to clean up after this worker: its tasks' processes go with it
    # (the group includes this process, so this is the worker's last act).
    kill_process_group(os.getpid())
    os._exit(EXIT_ORPHANED)


def kill_process_group(pid: int | None) -> bool:
    """SIGKILL the process group that worker ``pid`` leads; False if there is none.

    Call it once the worker has exited but before it is reaped (its pid cannot
    be reused then), or to kill a live worker together with its group.
    """
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _error_report(exc: BaseException) -> wire.ErrorReport:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None  # frames keep arguments alive; the text is enough
    try:
        exc_bytes: bytes | None = wire.dumps_fast(exc)
    except Exception:
        exc_bytes = None
    return wire.ErrorReport(exc_bytes, type(exc).__qualname__, str(exc), text)


class _Outbox:
    """Finished results not yet sent, flushed as one :class:`wire.Results`.

    If sending fails, the pipe broke under a task that ran since the last
    flush (one that closed the worker's fds, say): before the worker leaves,
    the progress slot names it, as if it were still running: the one task
    unsent, or, negated, the first of several (the supervisor then sends
    them one by one, so the next failure names the culprit).
    """

    def __init__(self, conn: Connection, progress: Any) -> None:
        self.conn = conn
        self.progress = progress
        self.ids: list[int] = []
        self.outcomes: list[int] = []
        self.times: list[tuple[float, float, float]] = []
        self.run_queue = _run_queue_clock()
        self.waited = self.run_queue()
        self.items: list[Any] = []
        self.last_flush = monotonic()

    def add(
        self, task_id: int, outcome: int, times: tuple[float, float, float], item: Any
    ) -> None:
        self.ids.append(task_id)
        self.outcomes.append(outcome)
        self.times.append(times)
        self.items.append(item)

    def flush(self) -> None:
        self.last_flush = monotonic()
        if not self.ids:
            return
        items = pickle_items(self.items, self.outcomes)  # first: it may change outcomes
        message = wire.Results(tuple(self.ids), tuple(self.outcomes), self._times(), items)
        ids = self.ids
        self.ids, self.outcomes, self.times, self.items = [], [], [], []
        try:
            wire.send_message(self.conn, wire.dumps_fast(message))
        except OSError:
            self.progress[0] = ids[0] if len(ids) == 1 else -ids[0]
            raise

    def _times(self) -> tuple[tuple[float, float, float, float], ...]:
        """Each task's times, with its share of the time this worker waited for a core
        since the last flush (by wall time): a CPU-bound task on a crowded machine
        still reads as CPU-bound (see ``TaskOutcome.wait_seconds``)."""
        waited, self.waited = self.waited, self.run_queue()
        walls = [finished - started for started, finished, _ in self.times]
        share = max(0.0, self.waited - waited) / (sum(walls) or 1.0)
        return tuple((*times, wall * share) for times, wall in zip(self.times, walls, strict=True))


def pickle_items(items: list[Any], outcomes: list[int]) -> tuple[bytes, ...]:
    """Each result on its own; one that cannot be pickled is replaced by its error
    (and its outcome by ``UNPICKLABLE_RESULT``): it fails only its own task."""
    pickled = []
    for i, item in enumerate(items):
        try:
            pickled.append(wire.dumps_fast(item))
        except BaseException as exc:  # a result's __reduce__ may raise anything
            outcomes[i] = wire.UNPICKLABLE_RESULT
            text = f"{type(item).__module__}.{type(item).__qualname__}: {exc}"
            pickled.append(wire.dumps_fast(text))
    return tuple(pickled)


def run_one(spec: WorkerSpec, resource: Any, fn: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> tuple[int, Any, str | None]:
    """``fn(resource, *args, **kwargs)``: its outcome code, result or error report, and
    why the worker must leave after it (``check_health`` said so), if it must."""
    try:
        return wire.OK, fn(resource, *args, **kwargs), None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the worker lives
        unhealthy = _unhealthy_reason(spec.check_health, exc)
        outcome = wire.RAISED if unhealthy is None else wire.RAISED_UNHEALTHY
        return outcome, _error_report(exc), unhealthy


def leave_reason(spec: WorkerSpec, tasks_done: int, rss: Callable[[], int] | None) -> str | None:
    """Why a healthy worker leaves after its latest task (recycling), if it does."""
    if spec.max_tasks is not None and tasks_done >= spec.max_tasks:
        return "max_tasks_per_worker reached"
    if rss is not None and rss() > (spec.max_memory or 0):
        return "max_memory_per_worker exceeded"
    return None


def _unhealthy_reason(
    check_health: Callable[[BaseException], bool] | None, exc: BaseException
) -> str | None:
    """None when the worker may go on after ``exc``; else why it must leave."""
    if check_health is None:
        return None
    if isinstance(exc, ChunkFailed):
        exc = exc.error  # an item of a map chunk failed: that is what to judge
    try:
        return None if check_health(exc) else "unhealthy"
    except BaseException as failure:  # a failing health check is itself a sign of trouble
        return f"unhealthy: check_health raised {type(failure).__qualname__}: {failure}"


def _serve(conn: Connection, spec: WorkerSpec, resource: Any, progress: Any) -> str | None:
    """Run tasks until told to leave. Returns why the worker leaves on its own."""
    pending: deque[tuple[int, Any, tuple[Any, ...], dict[str, Any]]] = deque()
    outbox = _Outbox(conn, progress)
    rss_reader = _rss_reader() if spec.max_memory else None
    next_message = _message_reader(conn)
    tasks_done = 0
    ran_chunk = False  # the last task was a map chunk: the next comes soon
    while True:
        if not pending:
            outbox.flush()
            message = wire.loads(next_message(ran_chunk))
            if type(message) is wire.Leave:
                return None
            _unpack(message, pending, outbox, progress)
            continue
        task_id, fn, args, kwargs = pending.popleft()
        ran_chunk = type(fn) is MapChunk
        started = monotonic()
        cpu_started = process_time()
        progress[1] = started
        progress[0] = task_id
        outcome, item, unhealthy = run_one(spec, resource, fn, args, kwargs)
        finished = monotonic()
        cpu = process_time() - cpu_started
        progress[0] = 0.0
        del fn, args, kwargs
        outbox.add(task_id, outcome, (started, finished, cpu), item)
        del item
        tasks_done += 1
        reason = unhealthy or leave_reason(spec, tasks_done, rss_reader)
        if reason is not None:
            outbox.flush()
            wire.send_message(conn, wire.dumps_fast(wire.Leaving(reason)))
            return reason
        if finished - outbox.last_flush >= FLUSH_SECONDS:
            outbox.flush()


def _unpack(message: wire.RunBatch, pending: deque[Any], outbox: _Outbox, progress: Any) -> None:
    # While loading, the slot holds the batch's first id, negated: if loading kills
    # the process (an argument that exhausts memory), the supervisor still knows
    # which batch did it, and does not send it again as it was.
    progress[0] = -message.task_ids[0]
    try:
        tasks = wire.loads(message.payload)
    except BaseException as exc:
        # The supervisor re-sends these one by one to find the bad one.
        text = f"{type(exc).__qualname__}: {exc}"
        now = monotonic()
        for task_id in message.task_ids:
            outbox.add(task_id, wire.UNREADABLE_TASK, (now, now, 0.0), text)
        return
    finally:
        progress[0] = 0.0
    pending.extend((task_id, *task) for task_id, task in zip(message.task_ids, tasks, strict=True))


def _message_reader(conn: Connection) -> Callable[[bool], bytes]:
    """The supervisor's next message; ``next_message(after_chunk)``.

    Between two tasks of a caller that submits one at a time, the next comes
    within a round trip, and between two chunks of a ``map`` within a few
    milliseconds: polling for it first, for a window learnt from the last waits
    of the same kind, spares the wake-up from sleep (see procpool.policy.spin).
    One read takes every message already there (:class:`wire.MessageReader`).
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    reader = wire.MessageReader(conn.fileno())
    arrived: deque[bytes] = deque()
    after_task = SpinWindow()
    after_chunk = SpinWindow(most=MOST_BETWEEN_CHUNKS_SECONDS)

    def next_message(after_a_chunk: bool) -> bytes:
        if arrived:
            return arrived.popleft()
        window = after_chunk if after_a_chunk else after_task
        started = monotonic()
        if window.seconds:
            polling.spin_until_readable(poller, window.seconds)
        arrived.extend(reader.read())
        window.waited(monotonic() - started)
        return arrived.popleft()

    return next_message


def _run_queue_clock() -> Callable[[], float]:
    """Seconds this thread has waited, runnable, for a core (0.0 where the OS cannot tell).

    One ``pread`` of ``/proc/thread-self/schedstat`` per flush of results (~2 us).
    """
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return lambda: 0.0

    def waited() -> float:
        try:
            return int(os.pread(fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):  # a task closed (or reused) its fd
            return 0.0

    return waited


def _rss_reader() -> Callable[[], int]:
    """The worker's resident set size in bytes, read after every task.

    On Linux one ``pread`` of ``/proc/self/statm`` (~2 us), the file psutil
    reads too, but psutil's path costs ~25 us: half again the pool's whole
    overhead on a tiny task (scripts/bench_recycling.py). Elsewhere, psutil.
    """
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        import psutil

        me = psutil.Process()
        return lambda: int(me.memory_info().rss)
    page = os.sysconf("SC_PAGE_SIZE")
    return lambda: int(os.pread(fd, 64, 0).split()[1]) * page


def worker_main(
    conn: Connection, spec_box: SpecBox, progress: Any, close_fds: tuple[int, ...] = ()
) -> None:
    """Entry point of a worker process (the ``target`` of its Process).

    ``close_fds``: the supervisor's pipe ends that "fork" copied into this
    process; holding them would keep those pipes open after the supervisor dies.
    """
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass  # closed by its pool between the listing and the fork
    try:
        os.setpgid(0, 0)  # a group of its own: see the module docstring
    except OSError:
        pass
    # Ctrl-C in a terminal reaches the whole process group: let the caller's
    # process decide what happens, instead of every task dying mid-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exiting = threading.Event()
    threading.Thread(
        target=_watch_supervisor, args=(conn, exiting), name="procpool-lifeline", daemon=True
    ).start()
    started = monotonic()
    try:
        spec = spec_box.open()
        resource = spec.on_create()
    except BaseException as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = f"on_create raised {type(exc).__qualname__}: {exc}"
        _send_quietly(conn, wire.CreateFailed(message, text))
        exiting.set()
        # A normal exit, so that multiprocessing's exit handlers run: what on_create
        # wrote to a multiprocessing queue (a log record) is flushed, not lost.
        sys.exit(1)
    _send_quietly(conn, wire.Ready(os.getpid(), monotonic() - started))
    try:
        _serve(conn, spec, resource, progress)
    except (EOFError, OSError):
        pass  # the supervisor went away: still release the resource below
    destroy_error = None
    if spec.on_destroy is not None:
        try:
            spec.on_destroy(resource)
        except BaseException as exc:
            destroy_error = f"on_destroy raised {type(exc).__qualname__}: {exc}"
    del resource
    _send_quietly(conn, wire.Goodbye(destroy_error))
    exiting.set()


def _send_quietly(conn: Connection, message: Any) -> None:
    try:
        wire.send_message(conn, wire.dumps_fast(message))
    except (OSError, ValueError):
        pass  # nobody is listening any more

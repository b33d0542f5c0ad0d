"""The messages between the supervisor and a local worker process.

One duplex pipe per worker carries them, one message per :func:`send_message`
(read by ``Connection.recv_bytes``, or by a :class:`MessageReader`).
Tasks and results travel in *batches*: when the pool is busy, one message
moves many tasks, so pickling and system-call costs are paid per batch, not
per task. Task ids travel outside the pickled payload, so that a payload that
cannot be read still tells which tasks it held.

Supervisor -> worker
    :class:`RunBatch`  tasks to run, in order
    :class:`Leave`     the graceful-exit sentinel: run ``on_destroy``, exit

Worker -> supervisor
    :class:`Ready`         ``on_create`` succeeded; tasks may come
    :class:`CreateFailed`  ``on_create`` raised; the worker exits
    :class:`Results`       outcomes of finished tasks, in the order they ran
    :class:`Leaving`       the worker takes no more tasks (unhealthy, recycled)
    :class:`Goodbye`       ``on_destroy`` ran; the process is about to exit
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import sys
from multiprocessing.connection import Connection
from typing import Any, ClassVar, NamedTuple

# Outcome codes of one task inside :class:`Results`.
OK = 0  #: payload item is the return value
RAISED = 1  #: payload item is an :class:`ErrorReport`
RAISED_UNHEALTHY = 2  #: as RAISED, and ``check_health`` called the worker unhealthy
UNPICKLABLE_RESULT = 3  #: payload item is the text of the pickling error
UNREADABLE_TASK = 4  #: the batch could not be unpickled in the worker; item is the error text
UNREADABLE_RESULT = 5  #: (supervisor side) the results could not be unpickled; item is the text

#: How task ids of a batch are numbered: plain ints, unique per manager.
TaskId = int


class RunBatch(NamedTuple):
    task_ids: tuple[TaskId, ...]
    #: ``dumps([(fn, args, kwargs), ...])`` in the order of ``task_ids``
    payload: bytes


class Leave(NamedTuple):
    pass


class Ready(NamedTuple):
    pid: int
    create_seconds: float


class CreateFailed(NamedTuple):
    message: str
    traceback_text: str


class ErrorReport(NamedTuple):
    """A task's exception, pickled on its own so a bad one spoils nothing else."""

    exception_bytes: bytes | None  # None when the exception could not be pickled
    type_name: str
    text: str
    traceback_text: str


class Results(NamedTuple):
    task_ids: tuple[TaskId, ...]
    outcomes: tuple[int, ...]
    #: ``(started, finished, cpu_seconds, wait_seconds)`` per task, read in the worker:
    #: monotonic seconds, the worker's ``time.process_time()`` the task used, and the
    #: time it waited for a core (see ``TaskOutcome.wait_seconds``)
    times: tuple[tuple[float, float, float, float], ...]
    #: one pickled payload item per task: a result that cannot be read back
    #: spoils only its own task, never the others of the message
    items: tuple[bytes, ...]


class Leaving(NamedTuple):
    reason: str


class Goodbye(NamedTuple):
    destroy_error: str | None


def dumps(obj: Any) -> bytes:
    """Pickle tasks: the C pickler where it means the same as cloudpickle, else cloudpickle,
    so that lambdas, closures and what ``__main__`` defines travel by value.

    The C pickler is 2-4x faster (cloudpickle calls back into Python for every
    object) and names functions and classes by reference, as cloudpickle does for
    an importable module. Where that output mentions ``__main__`` (which a
    worker may not have as the caller has it), or modules were registered to
    travel by value, cloudpickle pickles it again.
    """
    import cloudpickle  # here, not at the top: a worker that only loads never needs it

    if not _by_value_modules():
        try:
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a lambda, a closure: by value, below
            pass
        else:
            if b"__main__" not in data:
                return data
    pickled: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return pickled


@functools.cache
def _by_value_modules() -> Any:
    """cloudpickle's (live) registry of modules pickled by value (``register_pickle_by_value``)."""
    try:
        from cloudpickle import cloudpickle as internals

        return internals._PICKLE_BY_VALUE_MODULES
    except (ImportError, AttributeError):  # another cloudpickle: always ask it
        return {"?"}


def remember_main_classes() -> None:
    """Call before forking a worker (or the fork server) from this process.

    A task defined in ``__main__`` travels by value (cloudpickle), and so do
    the classes it uses: in a forked worker, which already holds ``__main__``,
    each would arrive as a copy, and ``isinstance`` against the original (in
    ``check_health``, say, which a fork does not pickle) would fail. Classes
    known to cloudpickle before the fork arrive as the worker's own originals.
    """
    main = sys.modules.get("__main__")
    try:
        from cloudpickle import cloudpickle as internals

        track = internals._get_or_create_tracker_id
    except (ImportError, AttributeError):  # another cloudpickle: copies, as before
        return
    for value in list(vars(main).values()) if main is not None else ():
        if isinstance(value, type) and value.__module__ == "__main__":
            track(value)


def dumps_for_child(obj: Any) -> bytes:
    """Cloudpickle, with multiprocessing's own reducers too, while a process is started.

    Objects such as a ``multiprocessing.Queue`` pickle only as part of a
    process's start, and their pipes only through multiprocessing's reducers
    (which pass the fds to the child); cloudpickle alone knows neither.
    """
    import io
    from collections import ChainMap
    from multiprocessing.reduction import ForkingPickler

    import cloudpickle

    class SpawningPickler(cloudpickle.CloudPickler):  # type: ignore[misc]
        dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
            ForkingPickler(io.BytesIO()).dispatch_table, cloudpickle.CloudPickler.dispatch_table)

    out = io.BytesIO()
    SpawningPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return out.getvalue()


def dumps_fast(obj: Any) -> bytes:
    """Pickle with the C pickler, falling back to cloudpickle.

    Results are usually plain data: the C pickler is several times faster
    there, and cloudpickle still covers results such as lambdas.
    """
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return dumps(obj)


loads = pickle.loads


def explain_unpicklable(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException
) -> str:
    """Say which part of a task cannot be pickled: the function or which argument."""
    item_arguments = getattr(fn, "item_arguments", None)
    if item_arguments is not None:  # a map chunk (procpool.tasks.MapChunk): which item?
        for index, item_args in enumerate(item_arguments(args)):
            try:
                dumps(item_args)
            except BaseException as item_exc:
                text = explain_unpicklable(fn.func, item_args, {}, item_exc)
                return f"map item {index} of a chunk: {text}"
    fn = getattr(fn, "func", fn)  # the function a wrapper (a partial) calls
    name = getattr(fn, "__qualname__", None) or repr(fn)
    parts: list[tuple[str, Any]] = [("the function", fn)]
    parts += [(f"positional argument {i}", arg) for i, arg in enumerate(args)]
    parts += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for label, obj in parts:
        try:
            dumps(obj)
        except BaseException as part_exc:
            return (
                f"task {name}: {label} ({_short_repr(obj)}, type {type(obj).__qualname__})"
                f" cannot be pickled: {type(part_exc).__name__}: {part_exc}"
            )
    return f"task {name} cannot be pickled: {type(exc).__name__}: {exc}"


def _short_repr(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except BaseException:
        text = f"<{type(obj).__qualname__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def send_message(conn: Connection, data: bytes) -> None:
    """Write ``data`` framed as ``Connection.send_bytes`` frames it, in one system call.

    ``send_bytes`` writes a message over 16 KiB as two (the length, then the
    bytes): the reader wakes on the first, finds half a message and sleeps
    again, two wake-ups where one does. ``writev`` sends both parts at once,
    without copying the bytes. Raises OSError as ``send_bytes`` does.
    """
    size = len(data)
    header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
    fd = conn.fileno()
    sent = os.writev(fd, (header, data))
    if sent == len(header) + size:
        return
    for part in (header, data):  # cut short (a signal, over 2 GiB): the rest, in order
        rest = memoryview(part)[min(sent, len(part)):]
        sent = max(0, sent - len(part))
        while rest:
            rest = rest[os.write(fd, rest):]


#: Bytes one read asks for: what a Linux pipe holds by default, and the order of a
#: socket pair's buffer (a duplex ``multiprocessing.Pipe`` is one).
READ_SIZE = 65536


class MessageReader:
    """Whole messages from a pipe, framed as :func:`send_message` frames them, in as
    few system calls as the data allows.

    ``Connection.recv_bytes`` reads twice per message (its length, then its
    bytes); one :meth:`read` here takes every message already in the pipe at
    once. On the supervisor's thread that matters more than the call itself:
    each read gives the GIL away, and a caller's thread that submits tasks
    takes it until its next pause.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._held = bytearray()  # the start of a message whose rest is still to come
        self._scratch = bytearray(READ_SIZE)  # read into: no allocation per read

    def read(self) -> list[bytes]:
        """Read once (blocking until data is there) and return every whole message
        now held, in order; with none whole yet, read on until the first is (as
        ``recv_bytes`` does). Raises EOFError at the end of the pipe, OSError as
        ``os.readv`` does."""
        messages: list[bytes] = []
        while not messages:
            count = os.readv(self._fd, (self._scratch,))
            if not count:
                raise EOFError("the pipe is closed")
            with memoryview(self._scratch) as view:
                self._held += view[:count]
            messages = self._whole_messages()
        return messages

    def _whole_messages(self) -> list[bytes]:
        held, start, messages = self._held, 0, []
        with memoryview(held) as view:
            while (frame := _frame(held, start)) is not None and frame[1] <= len(held):
                messages.append(bytes(view[frame[0]:frame[1]]))
                start = frame[1]
        del held[:start]
        return messages


def _frame(data: bytearray, start: int) -> tuple[int, int] | None:
    """Where the body of the message framed at ``start`` begins and ends (the end may
    lie beyond the data held); None while its header is not whole."""
    if len(data) - start < 4:
        return None
    (size,) = struct.unpack_from("!i", data, start)
    if size != -1:
        return start + 4, start + 4 + size
    if len(data) - start < 12:
        return None  # its 8-byte length is still to come
    (size,) = struct.unpack_from("!Q", data, start + 4)
    return start + 12, start + 12 + size

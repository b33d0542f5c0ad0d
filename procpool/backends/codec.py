"""Tasks and results between Python objects and the local wire (caller side).

Pickling is where user objects can fail in any way (a ``__reduce__`` that
raises, even ``KeyboardInterrupt``), so each function here turns such a
failure into an error for the one task concerned: nothing spoils its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import cloudpickle  # noqa: F401 -- loaded with the pool, not by its first task (~6 ms)

from procpool.backends import wire
from procpool.backends.base import TaskOutcome, TaskSpec
from procpool.errors import RemoteError, RemoteTraceback, TaskPicklingError

_RAISED = (wire.RAISED, wire.RAISED_UNHEALTHY)
_new_tuple = tuple.__new__


def encode_batch(tasks: Sequence[TaskSpec]) -> tuple[bytes, list[TaskSpec],
                                                      list[tuple[int, BaseException]]]:
    """``(payload, sent, rejected)``: one payload for the tasks that pickle, and an
    error naming the culprit (the function or which argument) for each other."""
    try:
        return wire.dumps([(t.fn, t.args, t.kwargs) for t in tasks]), list(tasks), []
    except BaseException:  # a __reduce__ may raise anything, KeyboardInterrupt included
        pass
    sendable = []
    rejected: list[tuple[int, BaseException]] = []
    for task in tasks:
        try:
            wire.dumps((task.fn, task.args, task.kwargs))
            sendable.append(task)
        except BaseException as exc:
            error = TaskPicklingError(
                wire.explain_unpicklable(task.fn, task.args, task.kwargs, exc))
            error.__cause__ = exc
            rejected.append((task.task_id, error))
    payload = wire.dumps([(t.fn, t.args, t.kwargs) for t in sendable])
    return payload, sendable, rejected


def decode_results(message: wire.Results) -> list[TaskOutcome]:
    """Read each task's result on its own: one that cannot be read fails only its task."""
    decoded = []
    for task_id, sent_outcome, (started, finished, cpu, waited), data in zip(
        message.task_ids, message.outcomes, message.times, message.items, strict=True
    ):
        outcome = sent_outcome
        try:
            item = wire.loads(data)
        except BaseException as exc:  # a __setstate__ may raise anything
            item = f"{type(exc).__qualname__}: {exc}"
            outcome = wire.UNREADABLE_RESULT
        del data
        value = rebuild_exception(item) if outcome in _RAISED else item
        # (tuple.__new__: the NamedTuple without its Python __new__, once per task)
        decoded.append(_new_tuple(TaskOutcome, (task_id, outcome, value, started, finished,
                                                cpu, waited)))
    return decoded


def rebuild_exception(report: wire.ErrorReport) -> BaseException:
    """The task's own exception with the worker's traceback as ``__cause__``."""
    exc: BaseException
    try:
        if report.exception_bytes is None:
            raise ValueError("not pickled")
        exc = wire.loads(report.exception_bytes)
        if not isinstance(exc, BaseException):
            raise TypeError("not an exception")
    except Exception:
        exc = RemoteError(report.type_name, report.text, report.traceback_text)
    exc.__cause__ = RemoteTraceback(report.traceback_text)
    return exc

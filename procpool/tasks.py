"""A task's record and its future, shared by the facade and the supervisor."""

from __future__ import annotations

import enum
import functools
import itertools
import threading
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from time import monotonic, perf_counter
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class TaskOwner(Protocol):
    """What a future needs of the pool that runs its task (the supervisor)."""

    def on_cancelled(self, task: Task) -> None:
        """The queued ``task`` was cancelled: stop counting it."""

    def run_callback(self, fn: Callable[[Future[Any]], object], future: Future[Any]) -> None:
        """Run a done-callback of ``future``, off the pool's own thread."""

    def collect(self, task: Task, timeout: float) -> None:
        """A caller is about to wait for ``task``: fetch its result now if that is cheap."""


#: The keyword arguments of every task called without any (never changed).
_NO_KWARGS: dict[str, Any] = {}


class TaskState(enum.Enum):
    QUEUED = "queued"  # waiting in a queue of the supervisor
    SENT = "sent"  # sent to a worker, not yet reported
    DONE = "done"  # its future is resolved (or cancelled while queued)


#: What Future.__init__ sets besides its Condition and its two lists.
_FUTURE_FIELDS = {"_state": PENDING, "_result": None, "_exception": None}


#: Held while a future's Condition is made, and while a future found without one
#: changes state without one (see TaskFuture): no waiter can slip in between.
#: Reentrant: making a Condition may collect garbage whose ``__del__`` (a dropped
#: ``map``'s) cancels futures, on the same thread.
_FIRST_USE = threading.RLock()

#: A wait without a timeout, as a number of seconds.
_FOREVER = float("inf")

_CANCELLED_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_OPEN_STATES = (PENDING, RUNNING)


class _MadeOnFirstUse:
    """A Future attribute made when first read: a data descriptor, so that Future's
    own code finds it. Made under ``_FIRST_USE``: two threads get the same object.

    Kept in a plain attribute whose class default is None (never through
    ``__dict__``: reading that would give the future a dict of its own, ~150
    bytes, where its attributes otherwise live inline).
    """

    def __init__(self, factory: Callable[[], object]) -> None:
        self._factory = factory
        self._key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._key = "_made" + name
        setattr(owner, self._key, None)

    def __get__(self, future: Any, owner: Any = None) -> Any:
        if future is None:
            return self
        made = getattr(future, self._key)
        if made is None:
            with _FIRST_USE:
                made = getattr(future, self._key)
                if made is None:
                    made = self._factory()
                    setattr(future, self._key, made)
        return made

    def __set__(self, future: Any, value: object) -> None:
        setattr(future, self._key, value)


class TaskFuture(Future[T]):
    """A :class:`concurrent.futures.Future` that tells the pool when it is cancelled.

    ``cancel()`` succeeds only while the task is queued; a task already sent
    to a worker keeps running (see ``TaskManager.cancel(fut, terminate=True)``).

    Its Condition and lists are made when first needed (to wait, to add a
    callback), and its other attributes live inline (it never gets a
    ``__dict__``): a queued task's future is 104 bytes, one object for the
    cyclic garbage collector to scan instead of five. A future nobody waited
    on or added a callback to has nobody to notify: it starts running and is
    resolved without a Condition at all (~7 us less per task on the
    supervisor), and a finished one answers ``result()`` without making one.
    """

    _task: Task | None = None
    _owner: weakref.ref[TaskOwner] | None = None
    _condition = _MadeOnFirstUse(threading.Condition)
    _made_condition: threading.Condition | None  # (None until made: see _MadeOnFirstUse)
    _waiters = _MadeOnFirstUse(list)
    _done_callbacks = _MadeOnFirstUse(list)

    def __init__(self) -> None:
        if _LEAN_FUTURES:
            self._state = PENDING
            self._result = None
            self._exception = None
        else:  # a Future.__init__ that sets more than this class knows of
            super().__init__()

    # -- without a Condition while nobody needs one -------------------------------

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def result(self, timeout: float | None = None) -> T:
        if self._state != FINISHED:
            owner = self._owner() if self._owner is not None else None
            task = self._task
            if owner is not None and task is not None and (timeout is None or timeout > 0):
                started = monotonic()
                owner.collect(task, _FOREVER if timeout is None else timeout)
                if timeout is not None:
                    timeout = max(0.0, timeout - (monotonic() - started))
        if self._state == FINISHED:
            return _finished_result(self)  # type: ignore[no-any-return]
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def set_running_or_notify_cancel(self) -> bool:
        with _FIRST_USE:
            if self._made_condition is None and self._state == PENDING:
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()

    def _start(self) -> bool:
        """For the pool, as its task is sent: RUNNING, or False if it was cancelled while
        queued. A re-queued task's future (a retry, a lost worker) is RUNNING: it stays so."""
        return self._state == RUNNING or self.set_running_or_notify_cancel()

    # (set_result and set_exception each finish in place if nobody waits: no
    # Condition made yet. Written out twice: they run once per task.)

    def set_result(self, result: T) -> None:
        with _FIRST_USE:
            if self._made_condition is None and self._state in _OPEN_STATES:
                self._result = result
                self._state = FINISHED
                return
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        with _FIRST_USE:
            if self._made_condition is None and self._state in _OPEN_STATES:
                self._exception = exception
                self._state = FINISHED
                return
        super().set_exception(exception)

    # -- the pool's additions ------------------------------------------------------

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        """As :meth:`concurrent.futures.Future.add_done_callback`, but when the pool
        resolves the future, ``fn`` runs on the pool's callback thread, never on
        its supervisor (see :mod:`procpool.callbacks`): a callback may block, even
        on another task of the same pool, without holding up the pool."""
        owner = self._owner
        if owner is None:
            super().add_done_callback(fn)
        else:
            super().add_done_callback(functools.partial(_call_back, owner, fn))

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        owner = self._owner() if self._owner is not None else None
        task, self._task = self._task, None
        if owner is not None and task is not None:
            owner.on_cancelled(task)
        return True


def _finished_result(future: Any) -> Any:
    if future._exception is not None:
        try:
            raise future._exception
        finally:
            future = None  # as Future does: the traceback must not hold the future (a cycle)
    return future._result


def _call_back(
    owner: weakref.ref[TaskOwner], fn: Callable[[Future[Any]], object], future: Future[Any]
) -> None:
    pool = owner()
    if pool is None:
        fn(future)
    else:
        pool.run_callback(fn, future)


class Task:
    """One accepted call ``fn(resource, *args, **kwargs)`` and its bookkeeping."""

    __slots__ = (
        "__weakref__",
        "alone",
        "args",
        "cancel_counted",
        "fn",
        "future",
        "id",
        "immediate",
        "kind",
        "kwargs",
        "once",
        "priority",
        "queued_at",
        "retries",
        "state",
        "timeout",
        "unexplained_deaths",
    )

    def __init__(
        self,
        task_id: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: TaskFuture[Any],
        *,
        priority: bool,
        once: bool,
        timeout: float | None,
        immediate: bool,
        queued_at: float,
        kind: Hashable = None,
    ) -> None:
        self.id = task_id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or _NO_KWARGS  # the caller's empty dict is freed at once
        self.future = future
        self.priority = priority
        self.once = once
        self.timeout = timeout
        self.immediate = immediate
        self.queued_at = queued_at
        #: what its duration is estimated by (procpool.policy.prefetch): its function
        self.kind = kind if kind is not None else kind_of(fn)
        self.retries = 0
        #: send in a batch of its own (timed tasks, or to isolate an unreadable one)
        self.alone = timeout is not None
        self.state = TaskState.QUEUED
        self.cancel_counted = False
        #: workers that died holding this task while running none (see supervisor)
        self.unexplained_deaths = 0

    @property
    def name(self) -> str:
        fn = getattr(self.fn, "func", self.fn)  # a partial, or a call without resource
        return getattr(fn, "__qualname__", None) or type(fn).__qualname__

    def describe(self) -> str:
        return f"task {self.id} ({self.name})"

    def release(self) -> None:
        """Drop the arguments: workers own heavy resources, memory is precious."""
        self.args = ()
        self.kwargs = _NO_KWARGS

    def resolve(self, value: Any) -> None:
        self.state = TaskState.DONE
        self.release()
        try:
            self.future.set_result(value)
        except InvalidStateError:
            pass  # cancelled or resolved by kill(): the first word stands
        self.future._task = None  # no cycle: a dropped future frees its result at once

    def fail(self, error: BaseException) -> None:
        self.state = TaskState.DONE
        self.release()
        try:
            self.future.set_exception(error)
        except InvalidStateError:
            pass
        self.future._task = None


def kind_of(fn: Callable[..., Any]) -> Hashable:
    """What tasks of ``fn`` have in common for duration estimates: its module and name.

    A name, not the function object, so that the estimate table keeps no
    closure (or what it holds) alive; one tuple per name, shared by its tasks.
    """
    target = getattr(fn, "func", fn)  # functools.partial: the function it wraps
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    kind = (getattr(target, "__module__", None), name)
    if len(_kinds) >= 1024:
        _kinds.clear()
    return _kinds.setdefault(kind, kind)


_kinds: dict[Hashable, Hashable] = {}


def _future_fields_known() -> bool:
    """True while Future.__init__ sets what TaskFuture expects (checked once, at import)."""
    return set(Future().__dict__) == {*_FUTURE_FIELDS, "_condition", "_waiters",
                                       "_done_callbacks"}


_LEAN_FUTURES = _future_fields_known()


class WithoutResource:
    """Runs in the worker: ``fn(*args, **kwargs)``, leaving the resource out.

    What ``procpool.Executor`` sends, since a ``concurrent.futures`` caller's
    functions take no resource. ``func`` names the function for duration
    estimates and error messages, as ``functools.partial`` does.
    """

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, resource: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self.func)


class ChunkFailed(Exception):
    """Raised by :class:`MapChunk`: item ``len(values)`` of a chunk raised ``error``.

    ``values`` are the results of the items before it, so that ``map``
    yields them and raises ``error`` where that item would be. A worker's
    ``check_health`` is asked about ``error`` itself.
    """

    def __init__(self, values: list[Any], error: BaseException) -> None:
        super().__init__(values, error)
        self.values = values
        self.error = error

    def __str__(self) -> str:
        return f"{type(self.error).__qualname__}: {self.error}"


class MapChunk:
    """Runs in the worker: one task that calls ``func`` on each item of a ``map`` chunk.

    Sent as ``MapChunk(func, spread)(resource, items)``. ``spread``: each item
    is a tuple of arguments (``map`` over several iterables), else the one
    argument. Returns the seconds it took, by which the next chunks are sized
    (:mod:`procpool.chunking`), and the results. ``func`` names it for
    duration estimates and error messages, as ``functools.partial`` does.
    """

    __slots__ = ("func", "spread")

    def __init__(self, func: Callable[..., Any], spread: bool) -> None:
        self.func = func
        self.spread = spread

    def __call__(self, resource: Any, items: list[Any]) -> tuple[float, list[Any]]:
        fn = self.func
        values: list[Any] = []
        started = perf_counter()
        try:  # extend() keeps what came before a failing item
            if self.spread:
                values.extend(fn(resource, *item) for item in items)
            else:
                values.extend(map(fn, itertools.repeat(resource), items))
        except BaseException as exc:  # as a plain task's: the worker lives on
            raise ChunkFailed(values, exc) from exc
        return perf_counter() - started, values

    def item_arguments(self, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The positional arguments of each item, for naming one that cannot be pickled."""
        (items,) = args
        return [item if self.spread else (item,) for item in items]

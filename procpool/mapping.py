"""``TaskManager.map``'s result iterators: lazy, with a bounded look-ahead.

Like a conveyor belt with a fixed number of trays: the input is read only as
trays come free, so a ten-million-item generator, or an endless one, costs
constant memory, and a ``break`` stops reading it. At most ``window`` tasks
are submitted and not yet yielded; when half of them have been yielded the
belt is topped up in one submission (one lock, one wake-up), so workers stay
fed while the caller consumes.

:class:`OrderedResults` yields in input order (``map``);
:class:`UnorderedResults` as tasks finish (``map_unordered``). Both run in the
caller's thread (whoever iterates); the supervisor only sees the submissions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FuturesTimeoutError  # TimeoutError from 3.11
from time import monotonic
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Tasks submitted ahead per worker that can run them. Enough to refill every
#: worker's prefetch twice over (throughput for tiny tasks); more only costs
#: memory, fewer starves the workers while the caller is busy with a result.
TASKS_AHEAD_PER_WORKER = 128


class _Results(Iterator[T], Generic[T]):
    """What both iterators share: the window, delivery of results and chunks, closing.

    ``submit(n)`` reads at most ``n`` more calls from the input, submits them
    and returns their futures (fewer once the input ends). A failing item's
    exception is raised where that item would be; then, as on ``close()``, on
    leaving the loop early or when the iterator is dropped, the tasks still
    queued are cancelled and the input is not read any further.
    """

    def __init__(
        self,
        submit: Callable[[int], list[Future[Any]]],
        window: int,
        chunked: bool,
        deadline: float | None,
    ) -> None:
        self._submit: Callable[[int], list[Future[Any]]] | None = submit
        self._window = max(1, window)
        self._chunked = chunked
        self._deadline = deadline
        self._chunk: deque[Any] = deque()
        self._keep(submit(self._window))

    def __iter__(self) -> _Results[T]:
        return self

    def __next__(self) -> T:
        while not self._chunk:
            future = self._next_future()
            if future is None:
                self.close()
                raise StopIteration
            self._top_up()
            try:
                value = future.result(self._remaining())
            except BaseException:
                self.close()
                raise
            del future
            if not self._chunked:
                result: T = value
                return result
            self._chunk.extend(value)
            del value
        return self._chunk.popleft()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Cancel what is still queued and read no more input. Idempotent."""
        self._submit = None
        for future in self._take_all():
            future.cancel()

    def __del__(self) -> None:
        self.close()

    def _top_up(self) -> None:
        ahead = self._ahead()  # submitted and not yet yielded
        if self._submit is None or ahead > self._window // 2:
            return
        more = self._submit(self._window - ahead)
        self._keep(more)
        if not more:
            self._submit = None  # the input is exhausted

    def _remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - monotonic())

    # -- what each order keeps, and how -------------------------------------------------

    def _next_future(self) -> Future[Any] | None:
        """The future whose result comes next; None once every one was taken."""
        raise NotImplementedError

    def _ahead(self) -> int:
        raise NotImplementedError

    def _keep(self, futures: list[Future[Any]]) -> None:
        raise NotImplementedError

    def _take_all(self) -> list[Future[Any]]:
        raise NotImplementedError


class OrderedResults(_Results[T]):
    """Results of ``map`` in input order (see :class:`_Results`)."""

    def __init__(self, submit: Callable[[int], list[Future[Any]]], window: int, chunked: bool,
                 deadline: float | None) -> None:
        self._futures: deque[Future[Any]] = deque()
        super().__init__(submit, window, chunked, deadline)

    def _next_future(self) -> Future[Any] | None:
        return self._futures.popleft() if self._futures else None

    def _ahead(self) -> int:
        return len(self._futures)

    def _keep(self, futures: list[Future[Any]]) -> None:
        self._futures.extend(futures)

    def _take_all(self) -> list[Future[Any]]:
        futures, self._futures = list(self._futures), deque()
        return futures


class UnorderedResults(_Results[T]):
    """Results of ``map_unordered`` as their tasks finish (see :class:`_Results`).

    Waiting uses :func:`concurrent.futures.wait`, which adds no done-callback:
    no result pays the callback thread's hop.
    """

    def __init__(self, submit: Callable[[int], list[Future[Any]]], window: int, chunked: bool,
                 deadline: float | None) -> None:
        self._pending: set[Future[Any]] = set()
        self._done: deque[Future[Any]] = deque()  # finished, not yet yielded
        super().__init__(submit, window, chunked, deadline)

    def _next_future(self) -> Future[Any] | None:
        if not self._done:
            if not self._pending:
                return None
            done, self._pending = wait(self._pending, self._remaining(), FIRST_COMPLETED)
            if not done:
                self.close()
                raise FuturesTimeoutError("map_unordered: no result within its timeout")
            self._done.extend(done)
        return self._done.popleft()

    def _ahead(self) -> int:
        return len(self._pending) + len(self._done)

    def _keep(self, futures: list[Future[Any]]) -> None:
        self._pending.update(futures)

    def _take_all(self) -> list[Future[Any]]:
        futures = [*self._pending, *self._done]
        self._pending, self._done = set(), deque()
        return futures
